"""Fine-tuning: train the head on a frozen backbone, then optionally unfreeze the backbone.

    python -m deeplense_tf.train --weights imagenet --freeze-backbone                  # head only
    python -m deeplense_tf.train --weights imagenet --freeze-backbone --unfreeze-at 3  # 3 epochs head only, then all

``--unfreeze-at N``: epochs 1..N train the head, epochs N+1.. the whole network (the same
0-based epoch index ``N`` as in ``history.csv``).

Keras 3 facts this relies on (its transfer-learning guide and ``BatchNormalization``'s docs):

- ``layer.trainable = False`` on a ``BatchNormalization`` layer also runs it in inference
  mode (moving statistics, no updates), so a frozen backbone's BatchNorm layers are in
  inference mode without passing ``training=False`` through the model.
- A change of ``trainable`` takes effect only in a newly traced train step, and an optimizer
  only updates the variables it was built with (``Unknown variable ...`` otherwise). So
  unfreezing rebuilds the optimizer from its own config over the new trainable variables,
  keeps its step counter (a learning-rate schedule continues where it was) and retraces
  the train step. Its moment estimates start afresh, as after the guide's recompile.
- With pretrained weights (``--weights``), BatchNorm layers stay frozen after unfreezing,
  as the guide recommends: a few epochs on small batches would wreck the ImageNet
  statistics. From scratch they unfreeze too: their statistics were never learnt.

The trainable flags are saved in every ``.keras`` checkpoint, and ``set_finetune_state``
reapplies the flags due at an epoch, so ``--resume`` continues frozen or unfrozen correctly.
"""

from __future__ import annotations

import keras

from deeplense_tf.config import ModelConfig
from deeplense_tf.errors import ConfigError


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone inside a ``create_model`` model: its one nested ``keras.Model``."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ConfigError(f"--freeze-backbone needs a model with one backbone sub-model; {model.name} has "
                          f"{len(nested)} ({', '.join(layer.name for layer in nested) or 'none'})")
    return nested[0]


def freeze_backbone(model: keras.Model) -> None:
    """Backbone weights and BatchNorm statistics fixed; the head (and nothing else) trains."""
    backbone_of(model).trainable = False


def unfreeze_backbone(model: keras.Model, keep_batchnorm_frozen: bool = False) -> None:
    backbone = backbone_of(model)
    backbone.trainable = True
    if keep_batchnorm_frozen:
        for layer in _sublayers(backbone):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def is_frozen(model: keras.Model) -> bool:
    return not backbone_of(model).trainable


def frozen_at(config: ModelConfig, epoch: int) -> bool:
    """Whether the backbone is frozen during 0-based ``epoch``."""
    return config.freeze_backbone and (config.unfreeze_at is None or epoch < config.unfreeze_at)


def set_finetune_state(model: keras.Model, config: ModelConfig, epoch: int) -> bool:
    """Set the trainable flags due at ``epoch`` (nothing unless ``--freeze-backbone``);
    rebuild a built optimizer if its variables changed. Returns whether anything changed."""
    if not config.freeze_backbone:
        return False
    before = [id(v) for v in model.trainable_variables]
    if frozen_at(config, epoch):
        freeze_backbone(model)
    else:
        unfreeze_backbone(model, keep_batchnorm_frozen=config.weights is not None)
    changed = [id(v) for v in model.trainable_variables] != before
    if changed and getattr(model, "optimizer", None) is not None and model.optimizer.built:
        rebuild_optimizer(model)
    return changed


def rebuild_optimizer(model: keras.Model) -> None:
    """A fresh optimizer of the same class and config over the current trainable variables.

    It keeps the step counter and the current learning rate (``get_config`` reads the
    variable that ``ReduceLROnPlateau`` lowers), and replaces the optimizer in the compile
    config too, so checkpoints save and reload the new one."""
    old = model.optimizer
    with model.distribute_strategy.scope():  # under MirroredStrategy its variables must be mirrored too
        new = old.__class__.from_config(old.get_config())
        new.build(model.trainable_variables)
    new.iterations.assign(old.iterations)
    model.optimizer = new
    compile_config = getattr(model, "_compile_config", None)  # what model.save serialises
    if compile_config is not None and "optimizer" in compile_config.config:
        compile_config.config["optimizer"] = new
    model.make_train_function(force=True)  # retraced over the new trainable variables


class UnfreezeBackbone(keras.callbacks.Callback):
    """At the start of epoch ``unfreeze_at`` (0-based) the backbone joins the training."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def on_epoch_begin(self, epoch, logs=None):
        if not frozen_at(self.config, epoch) and is_frozen(self.model):
            set_finetune_state(self.model, self.config, epoch)
            n = sum(int(keras.ops.size(v)) for v in self.model.trainable_variables)
            print(f"epoch {epoch + 1}: backbone unfrozen, {n:,d} trainable parameters")


def finetune_callbacks(config: ModelConfig) -> tuple[keras.callbacks.Callback, ...]:
    return (UnfreezeBackbone(config),) if config.freeze_backbone and config.unfreeze_at is not None else ()


def _sublayers(layer):
    for sub in getattr(layer, "layers", []):
        yield sub
        yield from _sublayers(sub)
