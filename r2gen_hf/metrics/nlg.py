"""NLG metrics for report generation: BLEU-1..4, METEOR, ROUGE-L and CIDEr exactly as the COCO-caption
scorers (`pycocoevalcap` 1.2) compute them, the way R2Gen and R2GenGPT call them.

Design choice: the numbers come from pycocoevalcap itself, so they equal its scorers by construction.
  * BLEU, ROUGE-L and CIDEr call pycocoevalcap's `Bleu(4)`, `Rouge()` and `Cider()` classes directly (pure
    Python; about 2 s for 1000 IU-Xray-length pairs on one core).
  * METEOR runs pycocoevalcap's own `meteor-1.5.jar` (with its paraphrase table, both in the wheel) with
    pycocoevalcap's exact command (`java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`) and line
    protocol (one `SCORE ||| ref ||| hyp` line per pair, then one `EVAL ||| stats ||| ...` line), through
    our own client, `MeteorScorer`, instead of pycocoevalcap's `Meteor` class, because that class:
    spawns a JVM per instance (the JVM takes 10-20 s to load the paraphrase table; we keep one process
    alive per Python process and reuse it), fails with a bare `FileNotFoundError` when Java is missing,
    hangs forever if the JVM stalls and desynchronises if a string holds a newline, never drains the
    JVM's stderr, and is not fork-safe. Our client pipelines the `SCORE` lines (a writer thread), reads
    with a timeout, reports the JVM's stderr when it dies, restarts it on the next call, and closes it
    at interpreter exit (`close_meteor_scorer()` closes it earlier).

Protocol (R2Gen's `compute_scores` / R2GenGPT's `score`):
  * One reference per study: `gts = {i: [references[i]]}`, `res = {i: [predictions[i]]}` for i = 0..n-1.
  * Strings are scored as given: no PTB tokenizer (R2Gen/R2GenGPT do not run it; cleaned reports are
    already lower-cased, punctuation-free and space-separated, e.g. "the heart is normal in size . the
    lungs are clear ."). Clean predictions the same way as the references (`r2gen_hf.data.clean_report`)
    if the model's raw output is not already in that form; this module does not clean anything.
  * References are the full cleaned reports, never truncated to a token budget (DESIGN.md §4).
  * BLEU: corpus-level (n-gram counts summed over the corpus), brevity penalty with the `closest`
    reference length, up to 4-grams; BLEU-k is pycocoevalcap's cumulative BLEU-k. Tokens: `str.split()`.
  * METEOR 1.5 (`-l en -norm`), the corpus score of the `EVAL` line (aggregated statistics, not the mean
    of the per-pair scores). Before a string goes to the JVM, "\\r" and "\\n" become spaces (the line
    protocol cannot carry them; pycocoevalcap would hang or desynchronise); as in pycocoevalcap, the
    prediction then loses any "|||" and its double spaces become single (one `replace` pass).
  * ROUGE-L: LCS-based F-measure with beta = 1.2, the best over the references (one here), averaged over
    the studies. Tokens: `str.split(" ")` (pycocoevalcap's; cleaned reports have single spaces).
  * CIDEr: pycocoevalcap's `Cider`, i.e. CIDEr-D (n = 1..4, Gaussian length penalty sigma = 6, clipped
    n-gram counts, x10), with document frequencies (idf) computed from the references of the scored
    corpus itself. Consequences: scores depend on the whole set scored together (score a whole split at
    once, never in shards); a one-pair corpus always scores 0 (idf = log(1/1) = 0); the range is
    [0, 10], not [0, 1].
All values are returned as Python floats, as fractions (BLEU, METEOR, ROUGE-L in [0, 1]; CIDEr in [0, 10]),
never percentages.

Edge cases (our definitions; pycocoevalcap has no checks of its own):
  * an empty (or whitespace-only) prediction is scored as that string, never dropped: it contributes 0 to
    every metric except through the corpus totals (BLEU's brevity penalty, METEOR's aggregate);
  * an empty or whitespace-only reference raises `ValueError` naming its indices (data preparation drops
    studies with empty reports; pycocoevalcap would give ROUGE-L 1 to an empty prediction against it);
  * different lengths of `predictions` and `references` raise `ValueError` with both lengths; no pairs at
    all raise `ValueError`; a non-string item raises `TypeError`.
"""

from __future__ import annotations

import atexit
import os
import queue
import shutil
import subprocess
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any


NLG_METRIC_KEYS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")

METEOR_JAR_NAME = "meteor-1.5.jar"
# pycocoevalcap's command line, word for word (the memory flag included): same jar, same options, same numbers.
METEOR_JAVA_OPTIONS: tuple[str, ...] = ("-jar", "-Xmx2G")
METEOR_ARGUMENTS: tuple[str, ...] = ("-", "-", "-stdio", "-l", "en", "-norm")
# Longest wait for any single line from the JVM; the first one includes loading the paraphrase table
# (10-20 s on an idle 2-core machine).
DEFAULT_METEOR_TIMEOUT_S = 600.0

_PYCOCOEVALCAP_HINT = "pip install 'pycocoevalcap>=1.2'"


# ------------------------------------------------------------------------------------------ inputs


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    """The inputs as two lists of strings, after the checks described in the module docstring."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of strings, not a single string.")
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have the same length, got {len(predictions)} predictions "
            f"and {len(references)} references."
        )
    if not predictions:
        raise ValueError("No (prediction, reference) pairs to score.")
    for name, texts in (("predictions", predictions), ("references", references)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{i}] is a {type(text).__name__}, not a str.")
    empty = [i for i, text in enumerate(references) if not text.strip()]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise ValueError(f"{len(empty)} empty reference(s), at index {shown}; every study needs a reference report.")
    return predictions, references


def _coco_inputs(predictions: list[str], references: list[str]) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """pycocoevalcap's `(gts, res)`: one reference and one prediction per study, keyed by index."""
    gts = {i: [reference] for i, reference in enumerate(references)}
    res = {i: [prediction] for i, prediction in enumerate(predictions)}
    return gts, res


def _import_pycocoevalcap(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"pycocoevalcap.{module}")
    except ImportError as error:
        raise ImportError(f"The NLG metrics need pycocoevalcap: {_PYCOCOEVALCAP_HINT}.") from error


# ------------------------------------------------------------------------------- BLEU, ROUGE-L, CIDEr


def bleu_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 (`closest` reference length), as `{"bleu_1": ..., "bleu_4": ...}`."""
    gts, res = _coco_inputs(*_check_pairs(predictions, references))
    scores, _ = _import_pycocoevalcap("bleu.bleu").Bleu(4).compute_score(gts, res, verbose=0)
    return {f"bleu_{k + 1}": float(score) for k, score in enumerate(scores)}


def rouge_l_score(predictions: Sequence[str], references: Sequence[str]) -> float:
    """ROUGE-L (beta 1.2) averaged over the studies."""
    gts, res = _coco_inputs(*_check_pairs(predictions, references))
    score, _ = _import_pycocoevalcap("rouge.rouge").Rouge().compute_score(gts, res)
    return float(score)


def cider_score(predictions: Sequence[str], references: Sequence[str]) -> float:
    """CIDEr-D (pycocoevalcap's `Cider`, idf from these references), in [0, 10]."""
    gts, res = _coco_inputs(*_check_pairs(predictions, references))
    score, _ = _import_pycocoevalcap("cider.cider").Cider().compute_score(gts, res)
    return float(score)


# ------------------------------------------------------------------------------------------- METEOR


def default_meteor_jar() -> Path:
    """pycocoevalcap's `meteor-1.5.jar` (its paraphrase table lies next to it, in `data/`)."""
    meteor_module = _import_pycocoevalcap("meteor.meteor")
    jar = Path(meteor_module.__file__).resolve().parent / METEOR_JAR_NAME
    if not jar.is_file():
        raise FileNotFoundError(f"pycocoevalcap's METEOR jar is missing: {jar} (reinstall: {_PYCOCOEVALCAP_HINT}).")
    return jar


def find_java(java: str | os.PathLike | None = None) -> str:
    """The `java` executable: `java` if given, else `$JAVA_HOME/bin/java`, else `java` on PATH."""
    candidates = [str(java)] if java is not None else []
    if java is None and os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if java is None:
        candidates.append("java")
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(
        "METEOR needs a Java runtime (8 or newer) and none was found "
        f"(looked for {', '.join(candidates)}). Install one (e.g. `apt-get install default-jre-headless`), "
        "put `java` on PATH or set JAVA_HOME; or compute the other metrics with "
        "`compute_nlg_metrics(..., meteor=False)`."
    )


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def _meteor_hypothesis(text: str) -> str:
    # pycocoevalcap's `Meteor._stat`, after our newline guard.
    return _one_line(text).replace("|||", "").replace("  ", " ")


_LIVE_SCORERS: "weakref.WeakSet[MeteorScorer]" = weakref.WeakSet()


class MeteorScorer:
    """A long-lived METEOR 1.5 JVM (pycocoevalcap's jar and command) that scores whole corpora.

    Thread-safe (one corpus at a time); after `os.fork` the child starts its own JVM when it first scores.
    The JVM starts on the first `score` (or `start`, which returns at once: call it early to load the
    paraphrase table while doing something else) and lives until `close`, garbage collection or exit.
    """

    def __init__(
        self,
        *,
        java: str | os.PathLike | None = None,
        jar: str | os.PathLike | None = None,
        timeout: float = DEFAULT_METEOR_TIMEOUT_S,
    ) -> None:
        self.java = java
        self.jar = Path(jar) if jar is not None else None
        self.timeout = timeout
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue | None = None
        self._stderr: deque[str] = deque(maxlen=40)
        self._stdout_thread: threading.Thread | None = None
        self._stderr_thread: threading.Thread | None = None
        _LIVE_SCORERS.add(self)

    # -- process management

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the JVM if it is not running (returns without waiting for it to load)."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self.running:
            return
        self._stop()
        java = find_java(self.java)
        jar = (self.jar or default_meteor_jar()).resolve()
        command = [java, *METEOR_JAVA_OPTIONS, jar.name, *METEOR_ARGUMENTS]
        self._stderr = deque(maxlen=40)
        self._lines = queue.Queue()
        self._process = subprocess.Popen(
            command, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._stdout_thread = threading.Thread(
            target=self._pump_stdout, args=(self._process.stdout, self._lines), daemon=True
        )
        self._stdout_thread.start()
        self._stderr_thread = threading.Thread(
            target=self._pump_stderr, args=(self._process.stderr, self._stderr), daemon=True
        )
        self._stderr_thread.start()

    @staticmethod
    def _pump_stdout(stream, lines: queue.Queue) -> None:
        try:
            for line in iter(stream.readline, b""):
                lines.put(line)
        except (OSError, ValueError):
            pass
        lines.put(None)  # end of output: the JVM exited

    @staticmethod
    def _pump_stderr(stream, stderr: deque) -> None:
        try:
            for line in iter(stream.readline, b""):
                stderr.append(line.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Stop the JVM (a later `score` starts a new one)."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()  # the JVM exits at end of input
        except OSError:
            pass
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # The pumps end at end of output; then their pipes can be closed.
        for thread, stream in ((self._stdout_thread, process.stdout), (self._stderr_thread, process.stderr)):
            if thread is not None:
                thread.join(timeout=2)
            if thread is None or not thread.is_alive():
                stream.close()

    def _forget_after_fork(self) -> None:
        # In a forked child: the JVM belongs to the parent (never stop it from here) and the pump threads
        # did not survive the fork.
        self._lock = threading.Lock()
        self._process = None
        self._lines = None
        self._stdout_thread = None
        self._stderr_thread = None

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:
            pass

    def __enter__(self) -> "MeteorScorer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- scoring

    def _failure(self, what: str) -> RuntimeError:
        process = self._process
        exit_code = None if process is None else process.poll()
        if process is not None and exit_code is None:
            process.kill()  # misbehaving: no graceful shutdown
        self._stop()  # also lets the stderr pump catch up before we quote it
        tail = "\n".join(self._stderr)
        code = f" (exit code {exit_code})" if exit_code is not None else ""
        return RuntimeError(f"METEOR (java{code}) {what}." + (f" Its stderr ends with:\n{tail}" if tail else ""))

    def _readline(self) -> str:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            raise self._failure(f"gave no answer within {self.timeout:g} s") from None
        if line is None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            raise self._failure("exited unexpectedly")
        return line.decode("utf-8", "replace").strip()

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> tuple[float, list[float]]:
        """(corpus METEOR, per-pair METEOR) of the pairs, one reference per prediction."""
        predictions, references = _check_pairs(predictions, references)
        score_lines = "".join(
            f"SCORE ||| {_one_line(reference)} ||| {_meteor_hypothesis(prediction)}\n"
            for prediction, reference in zip(predictions, references)
        ).encode()
        with self._lock:
            self._start()
            try:
                stats = self._exchange(score_lines, len(predictions))
                eval_line = ("EVAL" + "".join(f" ||| {stat}" for stat in stats) + "\n").encode()
                scores = self._exchange(eval_line, len(predictions) + 1)
                try:
                    return float(scores[-1]), [float(score) for score in scores[:-1]]
                except ValueError:
                    raise RuntimeError(f"METEOR (java) answered something other than scores: {scores[:3]}") from None
            except BaseException:
                # Whatever went wrong (an interrupt too), the stream may be out of step: start afresh next time.
                if self._process is not None:
                    self._process.kill()
                self._stop()
                raise

    def _exchange(self, payload: bytes, n_lines: int) -> list[str]:
        # Write from a thread (a large payload fills the pipe until the JVM, still loading, reads it)
        # while this thread collects the answers, each within the timeout.
        errors: list[BaseException] = []

        def write() -> None:
            try:
                self._process.stdin.write(payload)
                self._process.stdin.flush()
            except (OSError, ValueError) as error:  # broken pipe: the JVM died; `_readline` reports it
                errors.append(error)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        lines = [self._readline() for _ in range(n_lines)]
        writer.join()
        if errors:
            raise self._failure(f"could not be written to ({errors[0]})")
        return lines


_SHARED_SCORER: MeteorScorer | None = None
_SHARED_LOCK = threading.Lock()


def get_meteor_scorer() -> MeteorScorer:
    """The process-wide `MeteorScorer` that `compute_nlg_metrics` and the evaluate modules use."""
    global _SHARED_SCORER
    with _SHARED_LOCK:
        if _SHARED_SCORER is None:
            _SHARED_SCORER = MeteorScorer()
        return _SHARED_SCORER


def close_meteor_scorer() -> None:
    """Stop the shared METEOR JVM (it is also stopped at interpreter exit)."""
    with _SHARED_LOCK:
        if _SHARED_SCORER is not None:
            _SHARED_SCORER.close()


def _close_all() -> None:
    for scorer in list(_LIVE_SCORERS):
        try:
            scorer.close()
        except Exception:
            pass


def _after_fork_in_child() -> None:
    global _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()
    for scorer in list(_LIVE_SCORERS):
        scorer._forget_after_fork()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def meteor_score(
    predictions: Sequence[str], references: Sequence[str], *, scorer: MeteorScorer | None = None
) -> float:
    """Corpus METEOR 1.5 (by the shared `MeteorScorer` unless `scorer` is given)."""
    return (scorer or get_meteor_scorer()).score(predictions, references)[0]


# ---------------------------------------------------------------------------------------------- all


def compute_nlg_metrics(
    predictions: Sequence[str], references: Sequence[str], *, meteor: bool = True
) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of `predictions` against `references` (one full cleaned
    reference report per prediction), equal to pycocoevalcap's scorers on the same strings.

    Returns `{"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}` as floats (fractions;
    CIDEr in [0, 10]); with `meteor=False` (no Java needed) the "meteor" key is left out. Score a whole
    evaluation split in one call (CIDEr's idf and the corpus BLEU/METEOR are not averages over shards).
    """
    predictions, references = _check_pairs(predictions, references)
    meteor_result: dict[str, Any] = {}
    meteor_thread = None
    if meteor:
        scorer = get_meteor_scorer()

        def run_meteor() -> None:
            try:
                meteor_result["value"] = scorer.score(predictions, references)[0]
            except BaseException as error:  # re-raised below, in the caller's thread
                meteor_result["error"] = error

        # The JVM (loading, then scoring) runs alongside the Python scorers.
        meteor_thread = threading.Thread(target=run_meteor, name="r2gen-meteor", daemon=True)
        meteor_thread.start()
    metrics: dict[str, float] = dict(bleu_scores(predictions, references))
    metrics["rouge_l"] = rouge_l_score(predictions, references)
    metrics["cider"] = cider_score(predictions, references)
    if meteor_thread is not None:
        meteor_thread.join()
        if "error" in meteor_result:
            raise meteor_result["error"]
        metrics["meteor"] = meteor_result["value"]
    return {key: metrics[key] for key in NLG_METRIC_KEYS if key in metrics}


__all__ = [
    "DEFAULT_METEOR_TIMEOUT_S",
    "MeteorScorer",
    "NLG_METRIC_KEYS",
    "bleu_scores",
    "cider_score",
    "close_meteor_scorer",
    "compute_nlg_metrics",
    "default_meteor_jar",
    "find_java",
    "get_meteor_scorer",
    "meteor_score",
    "rouge_l_score",
]
