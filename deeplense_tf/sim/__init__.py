"""The lenstronomy simulator of the DeepLense sets and lens-finding stamps (no TensorFlow).

``generate`` (engine, cache), ``physics`` (presets and parameter draws), ``render`` (lenstronomy
images and noise), ``lens_finding`` (lens / non-lens stamps), ``lens_survey`` (their survey-like
confusers, lensed quasars and seeing; rendered by ``survey_render``), ``stream`` (an endless stream of new
images), ``workers`` (worker processes). The command: ``python -m deeplense_tf.data.simulate``.
"""
