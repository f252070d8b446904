"""deeplense_tf: dark-matter properties from strong-lensing images (Keras 3 / TensorFlow).

Importing the package is cheap: TensorFlow is imported only by the modules that need it.
"""

__version__ = "0.1.0"
