"""Phrase lists of the rule-based CheXpert-style labeler (`r2gen_hf.metrics.clinical.RuleBasedLabeler`).

Our own lists, written after the ideas of the public CheXpert labeler (Irvin et al., AAAI 2019: mention
phrases per observation, negation and uncertainty cues, "No Finding" when nothing abnormal is positive or
uncertain) and NegEx/ConText (pre- and post-cues with a scope that ends at a terminator). CheXpert parses
dependency graphs; we use regular expressions over one normalized sentence at a time, which is fast and needs
no model. Where this differs from CheXpert on purpose it is said next to the list.

Every pattern is a regular-expression fragment over *normalized* sentence text: lower case, every character
other than a-z and 0-9 replaced by a space (so hyphens, commas, apostrophes are gone: "air-space" is "air
space", "can't" is "cant"), single spaces. The labeler wraps each list in ``\\b(?:...)\\b``. ``G(k)`` is a gap
of at most ``k`` words.

Per observation (`OBSERVATION_RULES[name]`):
  * ``mention``: the observation is named (status 1 before cues: "cardiomegaly", "pleural effusion").
  * ``clause``: an anatomy + state clause ("the heart is moderately enlarged"); cues inside the span count
    ("the heart is not enlarged" -> 0), pre-cues only when directly in front of it.
  * ``uncertain``: a mention that is uncertain by itself (status -1: "borderline cardiomegaly",
    "pulmonary vascular congestion" as CheXpert has it); negation cues still make it 0.
  * ``normal``: normal phrasing, always 0, no cue changes it ("heart size is normal", "the lungs are clear").
  * ``weak``: uncertain (-1) only when nothing else in the report labels the observation ("stable cardiac
    silhouette": CheXpert labels this uncertain; "heart size is normal and stable" stays 0).
  * ``exclude``: spans that are not the observation ("pericardial effusion", "pleural line").
"""

from __future__ import annotations


def G(k: int) -> str:
    """A gap of 0..k words between two phrases (lazy, so the nearest match wins)."""
    return rf"(?: \S+){{0,{k}}}? "


# Words a clause's gap may not contain ("heart size normal hila prominent" is not an enlarged heart).
_CLAUSE_STOP = (
    r"normal|unremarkable|and|but|with|without|the|while|whereas|however|lungs?|hila|hilar|vasculature|vascularity|"
    r"mediastin\w*|aorta|aortic|pulmonary|lungs?"
)


def G_CLAUSE(k: int) -> str:
    """A gap of 0..k words inside an anatomy + state clause, none of them a `_CLAUSE_STOP` word."""
    return rf"(?: (?!(?:{_CLAUSE_STOP})\b)\S+){{0,{k}}}? "


OBSERVATIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)

# -------------------------------------------------------------------------------------- anatomy + state

_HEART = (
    r"(?:heart(?: size| shadow| contours?| silhouette| dimensions?)?|cardiac (?:silhouette|size|contours?|shadow|"
    r"diameter|dimensions?|outline|borders?)|cardiothoracic ratio|cardiac and mediastinal (?:silhouettes?|contours?))"
)
_CARDIOMEDIASTINAL = (
    r"(?:cardio ?mediastinal(?: silhouettes?| contours?| shadow| structures| borders?| size| width)?|cardiomediastinum)"
)
_MEDIASTINUM = (
    r"(?:"
    + _CARDIOMEDIASTINAL
    + r"|mediastinum|mediastinal (?:silhouettes?|contours?|width|configuration|shadow|structures|borders?)|"
    r"(?:hilar and )?mediastinal and hilar contours|hilar and mediastinal contours)"
)
_ENLARGED = r"(?:enlarged|enlargement|increased|large|larger|prominent|big|dilated|globular|widened|widening)"
_NORMAL = r"(?:normal|unremarkable|within normal limits|not enlarged)"
_BORDERLINE = (
    r"(?:borderline|top normal|top of normal|upper normal|upper limits? of normal|high normal|"
    r"at the upper limits? of normal)"
)
_STABLE = r"(?:stable|unchanged|similar)"

# ---------------------------------------------------------------------------------------- observations

OBSERVATION_RULES: dict[str, dict[str, list[str]]] = {
    "Enlarged Cardiomediastinum": {
        "mention": [
            r"(?:widened|widening of(?: the)?|enlarged|enlargement of(?: the)?|prominent|prominence of(?: the)?)"
            + G(2)
            + _MEDIASTINUM,
            r"mediastinal (?:widening|enlargement|prominence)",
        ],
        "clause": [_MEDIASTINUM + G_CLAUSE(4) + _ENLARGED],
        "uncertain": [],
        # "The cardiomediastinal silhouette is within normal limits."
        "normal": [_MEDIASTINUM + G(6) + _NORMAL, r"(?:normal|unremarkable)" + G(2) + _MEDIASTINUM],
        # CheXpert labels a "stable"/"unchanged" cardiomediastinal silhouette uncertain.
        "weak": [_MEDIASTINUM + G(3) + _STABLE, _STABLE + G(2) + _MEDIASTINUM],
        "exclude": [],
    },
    "Cardiomegaly": {
        "mention": [
            r"cardiomegaly",
            r"(?:cardiac|heart) enlargement",
            r"(?:enlarged|enlargement of(?: the)?|large|prominent|prominence of(?: the)?|dilated|globular|increased)"
            + G(2)
            + _HEART,
        ],
        "clause": [_HEART + G_CLAUSE(4) + _ENLARGED],
        "uncertain": [
            _BORDERLINE + G(2) + r"(?:cardiomegaly|enlarge\w*|" + _HEART + r")",
            _HEART + G(4) + _BORDERLINE,
        ],
        # A normal cardiomediastinal silhouette also says the heart is not enlarged.
        "normal": [
            _HEART + G(6) + _NORMAL,
            r"(?:normal|unremarkable)" + G(2) + _HEART,
            _CARDIOMEDIASTINAL + G(6) + _NORMAL,
            r"(?:normal|unremarkable)" + G(2) + _CARDIOMEDIASTINAL,
        ],
        "weak": [_HEART + G(3) + _STABLE, _STABLE + G(2) + _HEART],
        "exclude": [],
    },
    "Lung Opacity": {
        "mention": [
            r"opaci\w*",
            r"infiltrat\w*",
            r"air ?space (?:disease|process|opaci\w*|filling)",
            r"increased (?:density|densities|attenuation|markings|interstitial markings)",
            r"interstitial (?:markings?|pattern|opaci\w*|prominence|thickening|lung disease|disease|abnormality)",
            r"reticula\w*",
            r"(?:parenchymal )?scar(?:s|ring)?",
            r"peribronchial (?:thickening|cuffing)",
            r"ground glass",
            r"hazy|haziness",
        ],
        "clause": [],
        "uncertain": [],
        # "The lungs are clear." (CheXpert does not label this; we read it as no opacity.)
        "normal": [r"lungs?(?: fields?)?" + G(4) + r"clear(?! of)", r"clear lungs?"],
        "weak": [],
        "exclude": [
            r"pleural (?:parenchymal )?scar\w*",
            r"pleuro ?parenchymal scar\w*",
            r"pleuro ?pericardial scar\w*",
        ],
    },
    "Lung Lesion": {
        "mention": [
            r"nodul\w*",
            r"mass(?:es)?",
            r"lump",
            r"neoplas\w*",
            r"tumou?rs?",
            r"carcinoma\w*",
            r"malignan\w*",
            r"(?:lung|pulmonary|cavitary|cavitating|spiculated|focal|parenchymal) lesions?",
            r"cavitation",
            r"(?:pulmonary|lung) metastas\w*",
        ],
        "clause": [],
        "uncertain": [],
        "normal": [],
        "weak": [],
        "exclude": [r"mass effect", r"soft tissue mass\w*", r"muscle mass"],
    },
    "Edema": {
        "mention": [
            r"o?edema\w*",
            r"heart failure",
            r"chf",
            r"fluid overload",
            r"volume overload",
        ],
        "clause": [],
        # CheXpert: vascular/pulmonary congestion and vascular prominence are uncertain edema.
        "uncertain": [
            r"(?:vascular|pulmonary|venous) congestion",
            r"vascular (?:prominence|engorgement|redistribution)",
            r"(?:engorged|engorgement of the) (?:pulmonary )?vessels",
        ],
        "normal": [],
        "weak": [],
        "exclude": [r"(?:soft tissue|subcutaneous|extremity|bowel wall|leg|pedal|scalp|chest wall) edema"],
    },
    "Consolidation": {
        "mention": [r"consolidat\w*"],
        "clause": [],
        "uncertain": [],
        "normal": [],
        "weak": [],
        "exclude": [],
    },
    "Pneumonia": {
        "mention": [r"pneumoni\w*", r"bronchopneumoni\w*", r"infection", r"infectious(?: process)?"],
        "clause": [],
        "uncertain": [],
        "normal": [],
        "weak": [],
        "exclude": [],
    },
    "Atelectasis": {
        "mention": [r"atelecta\w*", r"collapsed?", r"(?:lobar|segmental|subsegmental) collapse"],
        "clause": [],
        "uncertain": [],
        "normal": [],
        "weak": [],
        "exclude": [r"(?:vertebral|vertebral body|compression) collapse"],
    },
    "Pneumothorax": {
        "mention": [r"pneumothora\w*", r"hydropneumothora\w*", r"ptx"],
        "clause": [],
        "uncertain": [],
        "normal": [],
        "weak": [],
        "exclude": [],
    },
    "Pleural Effusion": {
        "mention": [
            r"effusions?",
            r"pleural fluid",
            r"hydrothorax",
            r"hydropneumothora\w*",
            r"fluid in the (?:pleural space|fissures?)",
        ],
        "clause": [],
        "uncertain": [],
        "normal": [],
        "weak": [],
        "exclude": [r"(?:pericardial|joint|knee|shoulder|elbow|hip|middle ear|mastoid) effusions?"],
    },
    "Pleural Other": {
        # As CheXpert's list: fibrosis is counted here.
        "mention": [
            r"pleural (?:thickening|scar\w*|plaques?|calcifications?|reaction)",
            r"pleural (?:parenchymal )?scar\w*",
            r"pleuro ?parenchymal (?:scar\w*|thickening)",
            r"pleuro ?pericardial scar\w*",
            r"fibrothorax",
            r"apical (?:pleural )?(?:cap|capping|thickening)",
            r"fibrosis",
        ],
        "clause": [],
        "uncertain": [],
        "normal": [],
        "weak": [],
        "exclude": [],
    },
    "Fracture": {
        "mention": [r"fractur\w*"],
        "clause": [],
        "uncertain": [],
        "normal": [],
        "weak": [],
        "exclude": [],
    },
    "Support Devices": {
        "mention": [
            r"(?:picc|central(?: venous)?|venous|arterial|jugular|ij|subclavian|dialysis|hemodialysis|swan ganz|"
            r"femoral|pulmonary artery|pa|port|support|monitoring|iv|intravenous) (?:lines?|catheters?)",
            r"lines and tubes|tubes and lines",
            r"picc",
            r"catheters?",
            r"tubes?",
            r"ett",
            r"drains?",
            r"pacers?|pacemakers?|pacing (?:wires?|leads?|device)",
            r"(?:pacer|pacemaker|icd|aicd|ecg|ekg|epicardial|transvenous|cardiac monitor|monitoring) (?:leads?|wires?)",
            r"defibrillators?|aicd|icd",
            r"(?:sternotomy|sternal|cerclage|surgical) wires?",
            r"(?:surgical|vascular|cholecystectomy) clips",
            r"stents?",
            r"coils?",
            r"cannula\w*",
            r"(?:port a cath|portacath|mediport|power port|chest port)",
            r"(?:prosthetic|mechanical|replacement) (?:aortic |mitral |tricuspid )?valves?",
            r"valve (?:replacement|prosthesis)",
            r"hardware|screws?|fixation plates?",
            r"arthroplast\w*",
            r"devices?",
            r"apparatus",
            r"lvad|impella|intra aortic balloon pump|iabp|ecmo",
        ],
        "clause": [],
        "uncertain": [],
        "normal": [],
        "weak": [],
        "exclude": [r"plate ?like", r"feeding tube placement"],
    },
}

# Abnormalities outside the 13 observations that still mean "not No Finding" when positive or uncertain
# (after CheXpert's own list of such phrases).
OTHER_ABNORMALITY: list[str] = [
    r"emphysema\w*",
    r"hyper ?inflat\w*",
    r"hyper ?expan\w*",
    r"over ?inflat\w*",
    r"copd|chronic obstructive",
    r"bronchiectasis|bronchitis|bronchiolitis|bronchospasm|asthma",
    r"airways? disease",
    r"bullae|bulla|bullous",
    r"scoliosis|kyphosis|kyphotic",
    r"degenerat\w*",
    r"spondyl\w*",
    r"osteophyt\w*",
    r"calcifi\w*",
    r"granulom\w*",
    r"hernia\w*",
    r"cephalization",
    r"aspiration",
    r"contusion",
    r"atheroscler\w*",
    r"tortuous|tortuosity",
    r"aneurysm\w*",
    r"osteopenia|osteoporo\w*|demineraliz\w*",
    r"metasta\w*",
    r"pneumomediastinum|pneumoperitoneum|pneumopericardium",
    r"free (?:intraperitoneal )?air",
    r"subcutaneous (?:air|gas)",
    r"elevat\w*",
    r"eventration",
    r"blunt\w*",
    r"thickening",
    r"plaques?",
    r"volume loss",
    r"deformit\w*",
    r"hematoma|hemorrhage|haemorrhage",
    r"(?:lymph)?adenopathy",
    r"hilar (?:enlargement|prominence|fullness)",
    r"prominen\w*",
    r"cysts?|cystic",
    r"cavity",
    r"lucenc\w*",
    r"thoracentesis",
]

# ---------------------------------------------------------------------------------------------- cues
# One combined regex over the sentence, alternatives in priority order (an earlier kind wins at the same
# position). Kinds:
#   pseudo   - looks like a negation but is not ("no change in the effusion"): swallowed, does nothing;
#   unc_neg  - negated uncertainty ("cannot exclude", "not ruled out"), both directions: uncertain (-1),
#              checked before negation (as CheXpert's pre-negation uncertainty);
#   neg_post - negation after the mention ("... is not seen", "... has resolved");
#   unc_post - uncertainty after the mention ("... is likely", "... may be present");
#   neg_both - negation in either direction ("resolved", "absent", "removed");
#   neg_pre  - negation before the mention ("no", "without", "negative for", "free of");
#   unc_both - "versus"/"vs" between two alternatives: both uncertain;
#   unc_pre  - uncertainty before the mention ("possible", "may represent", "suspicious for", "likely");
#   weak_or  - "X or Y" without any other cue: both uncertain (CheXpert);
#   term     - ends a cue's scope ("but", "however", "which", a verb such as "is": "no effusion is seen .
#              the heart is enlarged" keeps the heart out of the negation's scope).

_SEEN = (
    r"(?:seen|identified|visualized|present|appreciated|demonstrated|evident|noted|visible|detected|apparent|shown|"
    r"evidenced|observed|re ?demonstrated|found|depicted)"
)
_COPULA = r"(?:is|are|was|were|has|have|had)"

CUE_PATTERNS: dict[str, list[str]] = {
    "pseudo": [
        r"(?:there (?:is|are|has been|have been) )?no "
        r"(?:significant |substantial |appreciable |definite |interval |further |other |major |marked )*"
        r"(?:change|changes|increase|decrease|worsening|improvement|progression|enlargement)",
        r"(?:not|without) (?:significantly |substantially |appreciably )?"
        r"(?:changed|increased|decreased|improved|worsened)",
        r"without (?:significant |interval |appreciable |definite |further )*"
        r"(?:change|changes|increase|decrease|worsening|improvement|progression)",
        r"not only",
        r"gram negative",
    ],
    "unc_neg": [
        r"(?:"
        + _COPULA
        + r" )?(?:cannot|can not|cant|could not|couldnt|may not|does not|do not|did not)"
        r"(?: \S+){0,2}? (?:exclude|excluded|rule out|ruled out)",
        r"(?:" + _COPULA + r" )?not(?: \S+){0,2}? (?:excluded|ruled out)",
        r"(?:difficult|hard|impossible|unable) to (?:exclude|rule out)",
        r"(?:there (?:is|are) )?no new",
        r"(?:"
        + _COPULA
        + r" )?(?:not (?:well|clearly|optimally|adequately|fully)|poorly|incompletely|suboptimally) "
        r"(?:seen|visualized|evaluated|assessed)",
        r"obscur\w*",
    ],
    "neg_post": [
        r"(?:"
        + _COPULA
        + r" )?(?:(?:been|now) )?(?:not|no longer) (?:be )?(?:clearly |definitely |convincingly |well )?"
        + _SEEN,
        r"(?:is|are|was|were) (?:now )?(?:absent|gone|negative|normal)",
        r"(?:has|have) (?:since |now )?(?:been )?(?:resolved|cleared|removed|withdrawn|excluded|ruled out)",
        r"(?:has|have) (?:since |now )?(?:resolved|cleared|disappeared)",
    ],
    "unc_post": [
        r"(?:is|are|was|were) (?:\S+ )?"
        r"(?:possible|likely|probable|suspected|questioned|questionable|favored|considered|"
        r"a possibility|uncertain|equivocal|indeterminate|not entirely clear)",
        r"(?:may|might|could) (?:also )?(?:be |have been )?(?:present|seen|possible|have this appearance)",
        r"(?:is|are) (?:felt|thought|believed|suspected) to",
        r"(?:cannot|can not|cant) be (?:assessed|evaluated)",
    ],
    "neg_both": [
        r"resolved",
        r"absent",
        r"removed",
    ],
    "neg_pre": [
        r"no (?:radiographic |definite |convincing |obvious |acute |focal |new |other |significant |gross )?"
        r"(?:evidence|signs?|findings?|indication) (?:of|to suggest|suggestive of|for)",
        r"(?:there (?:is|are|was|were) )?no longer",
        r"(?:there (?:is|are|was|were) )?no",
        r"not",
        r"without (?:(?:radiographic |definite |convincing |any )?(?:evidence|signs?) (?:of|for) )?",
        r"absence of",
        r"negative for",
        r"free of",
        r"clear of",
        r"(?:interval )?resolution of",
        r"(?:interval )?removal of",
        r"non",
        r"none",
        r"never",
        r"neither",
        r"nor",
        r"rules? out",
    ],
    "unc_both": [r"versus", r"vs"],
    "unc_pre": [
        r"possibl[ey]",
        r"probabl[ey]",
        r"likely",
        r"presum\w*",
        r"suspect\w*",
        r"suspicious(?: for| of)?",
        r"suspicion (?:of|for)",
        r"suggest\w*(?: of)?",
        r"concern\w*(?: for| of)?",
        r"worrisome(?: for)?",
        r"question(?:able|ed)?(?: of| for)?",
        r"(?:may|might|could|can|would)(?: \S+){0,1}? "
        r"(?:represent|reflect|indicate|be|include|relate|correspond|signify|suggest|"
        r"have|due|consistent|compatible)\w*(?: to| with)?",
        r"(?:may|might|could)",
        r"consider\w*",
        r"differential(?: diagnosis)?(?: includes?| of| would include)?",
        r"equivocal",
        r"indeterminate",
        r"borderline",
        r"uncertain",
        r"unclear",
        r"not clear",
        r"r o",
        r"(?:evaluate|eval|assess|evaluation|assessment) (?:for|of)",
        r"correlat\w*(?: \S+){0,2}? (?:for|with)",
        r"favou?r\w*",
        r"maybe",
        r"perhaps",
    ],
    "weak_or": [r"and or", r"or"],
    "term": [
        r"but",
        r"however",
        r"although",
        r"though",
        r"yet",
        r"except(?: for)?",
        r"whereas",
        r"while",
        r"which",
        r"aside from",
        r"apart from",
        r"other than",
        r"with the exception of",
        r"and (?:the|there)",
        _COPULA,
        r"(?:remains?|appears?|demonstrates?|shows?|seen|noted|present)",
    ],
}
