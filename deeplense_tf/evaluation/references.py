"""Published figures on the DeepLense data sets, with their sources, to set beside ours.

The study leaderboard (``python -m deeplense_tf.study``) prints the rows of the same task and
data set next to each of our results. A published figure is comparable with ours only on data
made the way the released sets were: Models II/III noise-free (``sim:model_ii:noise=published``),
the GSoC-era regression figures moreover on images stored as int16 (their pipelines' loss of
precision), so they are upper bounds of what a float pipeline gets.
"""

from __future__ import annotations

from dataclasses import dataclass

LENS_LEJEPA = "GSoC 2026 Lens-LeJEPA (arnesh2212/Lens-FM-DeepLense)"
GSOC_REGRESSION = "ML4SCI/DeepLense GSoC regression projects (images stored as int16)"
GSOC_CLASSIFICATION = "ML4SCI/DeepLense GSoC classification projects (arXiv:2112.12121 and sub-projects)"
BOLOGNA = "Bologna lens-finding challenge, Metcalf et al. 2019, A&A 625, A119"


@dataclass(frozen=True)
class Reference:
    task: str  # our --task
    dataset: str  # model_i | model_ii | model_iii | bologna_ground | bologna_space
    metric: str  # the key of our metrics.json it compares with
    value: float
    model: str
    recipe: str
    source: str


def _rows(task: str, metric: str, model: str, recipe: str, source: str, values: dict) -> list[Reference]:
    return [Reference(task, dataset, metric, value, model, recipe, source) for dataset, value in values.items()]


REFERENCES: tuple[Reference, ...] = tuple(
    _rows("regression", "mae", "ResNet18", "from scratch, min-max, 160 px, Huber, AdamW 3e-4, batch 128, 50 epochs",
          LENS_LEJEPA, {"model_ii": 0.021, "model_iii": 0.019})
    + _rows("regression", "mae", "ViT-S/16 + rsLoRA", "self-supervised on Model I", LENS_LEJEPA,
            {"model_ii": 0.100, "model_iii": 0.090})
    + _rows("regression", "mae", "XResNet18-hybrid", "fastai, 200 epochs", GSOC_REGRESSION,
            {"model_i": 0.274, "model_ii": 0.221, "model_iii": 0.126})
    + _rows("regression", "mae", "CMT-Ti", "", GSOC_REGRESSION, {"model_i": 0.274, "model_ii": 0.239, "model_iii": 0.144})
    + _rows("regression", "mae", "ResNet34", "ImageNet-pretrained, 300 epochs", GSOC_REGRESSION,
            {"model_i": 0.285, "model_ii": 0.216, "model_iii": 0.133})
    + _rows("regression", "mae", "CvT-13", "", GSOC_REGRESSION, {"model_i": 0.278, "model_ii": 0.255, "model_iii": 0.140})
    + _rows("regression", "mae", "ViT", "", GSOC_REGRESSION, {"model_i": 0.442, "model_ii": 0.244, "model_iii": 0.218})
    + _rows("classification", "roc_auc_macro_ovr", "EfficientNet-B2/B1 (timm)", "", GSOC_CLASSIFICATION,
            {"model_i": 0.9944, "model_ii": 0.99986, "model_iii": 0.999999})
    + _rows("classification", "accuracy", "EfficientNet-B2/B1 (timm)", "", GSOC_CLASSIFICATION,
            {"model_i": 0.963, "model_ii": 0.992, "model_iii": 0.999})
    + _rows("classification", "accuracy", "ResNet18", "from scratch, the Lens-LeJEPA regression recipe", LENS_LEJEPA,
            {"model_ii": 0.9999})
    + _rows("classification", "accuracy", "CvT", "", GSOC_CLASSIFICATION,
            {"model_i": 0.915, "model_ii": 0.994, "model_iii": 0.990})
    + _rows("anomaly", "auc_vs_all", "VAE", "trained on no_sub only", GSOC_CLASSIFICATION,
            {"model_ii": 0.9989, "model_iii": 0.9987})
    + _rows("lens_finding", "auc", "CMU DeepLens (46-layer pre-activation ResNet)", "4 bands, 101 px", BOLOGNA,
            {"bologna_ground": 0.98})
    + _rows("lens_finding", "auc", "best entry", "1 band, 101 px", BOLOGNA, {"bologna_space": 0.93})
)
# Our simulated presets and the data sets their published figures were measured on.
PRESET_DATASETS = {"model_i": "model_i", "model_ii": "model_ii", "model_iii": "model_iii",
                   "lens_finding": "bologna_space", "lens_finding_ground": "bologna_ground",
                   "lens_finding_survey": "bologna_space", "lens_finding_ground_survey": "bologna_ground"}


def references_for(task: str, dataset: str | None) -> list[Reference]:
    return [r for r in REFERENCES if r.task == task and r.dataset == dataset]
