"""Input and output geometry of each model, as plain data (no PyTorch import), so that
ONNX-only inference can check tile sizes without loading PyTorch."""

#: Output stride of each model's logits relative to its input.
OUTPUT_STRIDE = {"espnet_a": 8, "espnet_b": 8, "espnet_c": 8, "espnet": 1, "espnetv2": 1}
#: Input sizes must be multiples of this.
INPUT_MULTIPLE = {"espnet_a": 8, "espnet_b": 8, "espnet_c": 8, "espnet": 8, "espnetv2": 16}
