"""Training recipes: what `ncaer train --model M` uses for every option not given.

`reference` (the default) is M's reference code's recipe where it has been traced to it
(docs/fidelity.md gives the file and line of each value); `fast` trades fidelity for
GPU throughput. An option given on the command line or in a --config file wins over
the recipe; the run's config.yaml records the recipe's name and every resolved value.
"""

from __future__ import annotations

from glamor_model.models.registry import model_family

# minhnhatvt/glamor-net config.py and train.py: SGD momentum 0.9, lr 5e-4, batch 4, x0.1 at epochs
# 25 and 40 with a floor of 1e-5, 60 epochs; fp32 (TensorFlow's default); inputs in [0, 1]
# (data_utils.py); face flip and rotation; JPEG q95 re-encode and tf.image.resize bilinear
GLAMOR_REFERENCE = dict(epochs=60, batch_size=4, optimizer="sgd", lr=5e-4, momentum=0.9, nesterov=False,
                        weight_decay=0.0, milestones=(25, 40), gamma=0.1, min_lr=1e-5, amp="off", normalize=False,
                        augment_face=True, context_resize="tf-bilinear", context_jpeg=95, face_size=96)
# 64 times the reference batch with the lr scaled linearly (Goyal et al. 2017) and bf16 autocast on CUDA
GLAMOR_FAST = {**GLAMOR_REFERENCE, "batch_size": 256, "lr": 5e-4 * 64, "amp": "auto"}

# ndkhanh360/CAER CAER/configs/normal_config.json (commit 49761a6): SGD lr 1e-2, momentum 0.9, Nesterov,
# StepLR(step 15, gamma 0.5), 150 epochs, batch 128; utils/util.py get_transform: ImageNet mean/std, no face
# augmentation, PIL's (antialiased) resize, no re-encode
CAER_NET_S_REFERENCE = dict(epochs=150, batch_size=128, optimizer="sgd", lr=1e-2, momentum=0.9, nesterov=True,
                            weight_decay=0.0, milestones=tuple(range(15, 150, 15)), gamma=0.5, min_lr=0.0,
                            amp="off", normalize=True, augment_face=False, context_resize="area", context_jpeg=0,
                            face_size=96)
CAER_NET_S_FAST = {**CAER_NET_S_REFERENCE, "batch_size": 256, "lr": 2e-2, "amp": "auto"}

# Models not yet traced to their reference code (docs/fidelity.md): the engine's earlier defaults, and no
# fast recipe
UNTRACED = dict(epochs=60, batch_size=32, optimizer="sgd", lr=5e-4, momentum=0.9, nesterov=False, weight_decay=0.0,
                milestones=(25, 40), gamma=0.1, min_lr=1e-5, amp="auto", normalize=False, augment_face=True,
                context_resize="tf-bilinear", context_jpeg=95, face_size=96)

# ndkhanh360/CAER at commit 4bd7625 (CAER-Net-S with a face-recognition ResNet-18): config.json: Adam lr 1e-4,
# weight decay 1e-3 (PyTorch's Adam: L2 added to the gradient, as here), StepLR(step 5, gamma 0.2), 10 epochs,
# batch 32, best on val_accuracy; train.py builds the optimizer on the parameters that require a gradient, as the
# engine does. utils/util.py get_transform: face resized to 160x160, context to 128x171 then crop 112, both
# ImageNet mean/std, no augmentation but the context crop, PIL's resize, no re-encode; fp32. No fast recipe: the
# reference's batch is already 32 and nobody traced an Adam lr for a larger one.
CAER_RESNET18_REFERENCE = dict(epochs=10, batch_size=32, optimizer="adam", lr=1e-4, momentum=0.0, nesterov=False,
                               weight_decay=1e-3, milestones=tuple(range(5, 10, 5)), gamma=0.2, min_lr=0.0,
                               amp="off", normalize=True, augment_face=False, context_resize="area", context_jpeg=0,
                               face_size=160)

# pedrodiamel/ferattention runs/train.sh (and train_ck.sh, train_bu3dfe.sh): batch 32, lr 1e-4, 500 epochs, opt adam,
# scheduler fixed; pytvision neuralnet.py (pedrodiamel/pytorchvision) builds that Adam with amsgrad=True and no
# weight decay; fp32. The options of frame models (augment_face, context_*) do not reach face-image models.
FERATT_REFERENCE = {**UNTRACED, "epochs": 500, "batch_size": 32, "optimizer": "amsgrad", "lr": 1e-4, "momentum": 0.0,
                    "weight_decay": 0.0, "milestones": (), "gamma": 1.0, "min_lr": 0.0, "amp": "off"}

# thayral/temporal-stochastic-softmax (the temporal softmax pooling lab's code): trainer.py SGD momentum 0.9 with
# lr_core 5e-4 and wd_base 1e-3 for the layers trained from scratch (config.py:45,49); batch 4 (config.py:28),
# backward() on each batch's mean loss and a step every 8 batches (main.py:70, trainer.py:383-387): the step's
# gradient is 8 times the mean over 32 clips. On the mean over 32, the same update is lr 8 x 5e-4 = 4e-3 with
# weight decay 1e-3 / 8 (decay is added once per step). fp32. Its ReduceLROnPlateau(patience 5, factor 0.5) on the
# validation loss, early stopping (patience 10, up to 200 epochs) and lr 2.5e-6 for a pretrained backbone are
# not in the engine (docs/fidelity.md): a constant lr over 60 epochs, the best-on-validation checkpoint kept.
VIDEO_REFERENCE = {**UNTRACED, "epochs": 60, "batch_size": 32, "optimizer": "sgd", "lr": 8 * 5e-4, "momentum": 0.9,
                   "weight_decay": 1e-3 / 8, "milestones": (), "gamma": 1.0, "min_lr": 0.0, "amp": "off"}

RECIPES: dict[str, dict[str, dict]] = {
    "glamor": {"reference": GLAMOR_REFERENCE, "fast": GLAMOR_FAST},
    "caer-net-s": {"reference": CAER_NET_S_REFERENCE, "fast": CAER_NET_S_FAST},
    "caer-resnet18": {"reference": CAER_RESNET18_REFERENCE},
    "feratt": {"reference": FERATT_REFERENCE},
    "feratt-cls": {"reference": FERATT_REFERENCE},
    **{m: {"reference": VIDEO_REFERENCE} for m in ("video-tsp", "video-mean", "video-max")},
}
# the ablation cells are GLAMOR-Net with streams or attention changed: its recipe
for _cell in ("face-context-ca", "face-context-none", "face-only", "context-none", "context-ca", "context-gla"):
    RECIPES[_cell] = RECIPES["glamor"]
RECIPE_NAMES = ("reference", "fast")
LEGACY_RECIPE = "legacy"  # a run saved before the recipes: every value is in its saved config


def recipe_values(model: str, recipe: str) -> dict:
    """The recipe's value of every option it sets (those of GLAMOR_REFERENCE) for `model` (KeyError for an
    unknown model)."""
    if recipe == LEGACY_RECIPE:
        return dict(UNTRACED)
    if recipe not in RECIPE_NAMES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPE_NAMES)}, not {recipe!r}")
    model_family(model)  # an unknown model is refused here
    if recipe in RECIPES.get(model, {}):
        return dict(RECIPES[model][recipe])
    if recipe != "reference":
        why = "" if model in RECIPES else " yet: its reference recipe is not traced (docs/fidelity.md)"
        raise ValueError(f"{model} has no {recipe} recipe{why}; give its options instead")
    return dict(UNTRACED)
