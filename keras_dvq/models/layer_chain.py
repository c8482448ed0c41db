import keras

from keras_dvq.models.lowering import call_layer


class LayerChain(keras.layers.Layer):
    """Base of the encoders and decoders: a fixed chain of layers.

    Subclasses fill `self.chain` in `__init__`; building, calling and shape
    inference walk the chain in order, so each architecture file only says
    which layers it is made of.

    Example:

    ```python
    class TinyEncoder(LayerChain):
        stride = 2

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.chain = [
                keras.layers.Conv2D(8, 3, strides=2, padding="same"),
                keras.layers.ReLU(),
            ]

    TinyEncoder()(np.zeros((1, 8, 8, 3))).shape  # (1, 4, 4, 8)
    ```
    """

    def build(self, input_shape):
        shape = input_shape
        for layer in self.chain:
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.chain:
            # Some layers run through equivalent formulations that XLA on CPU
            # differentiates faster (same variables and outputs; lowering.py).
            x = call_layer(layer, x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for layer in self.chain:
            shape = layer.compute_output_shape(shape)
        return shape
