"""pipelines.fit_startup: the optimiser built at compile saves fit's second trace (slow: two processes)."""

import pytest

from pipelines import fit_startup


@pytest.mark.slow  # ~40 s: two child processes
def test_prebuilt_optimiser_traces_the_step_once():
    before, after = (fit_startup.run_child("mobilenet_v3_small", mode) for mode in fit_startup.MODES)
    assert (before["traces"], after["traces"]) == (2, 1)


def test_compile_model_builds_the_optimiser():
    from deeplense_tf.config import RunConfig, replace
    from deeplense_tf.models.build import create_model
    from deeplense_tf.training.trainer import compile_model

    config = replace(RunConfig(), model={"arch": "mobilenet_v3_small", "task": "regression"}, train={"ema": 0.99})
    model = create_model(config.model, (32, 32, 1), n_classes=3, seed=0)
    compile_model(model, config)
    assert model.optimizer.built and len(model.optimizer._model_variables_moving_average) == len(model.trainable_variables)
