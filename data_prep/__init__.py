"""Dataset preparation: IU-Xray, MIMIC-CXR, R2Gen annotation files and a synthetic chest X-ray set, all
written as the same prepared `datasets.DatasetDict` (see `data_prep.common`)."""
