"""The one logical-axis rule table, shared by the audio tower and the LLM.

Every parameter and every block-boundary activation carries logical axis names; this table maps
them to the mesh axes `data`, `fsdp`, `tensor` (MaxText/T5X vocabulary). Change sharding here,
not in model code.
"""

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES = (
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    # parameters
    ("layers", None),  # the scan axis of stacked layers
    ("embed", "fsdp"),  # model width (both towers)
    ("audio_embed", "tensor"),  # encoder width on the input side of the projector
    ("heads", "tensor"),  # flattened query heads × head_dim
    ("kv_heads", "tensor"),  # flattened key/value heads × head_dim
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("positions", None),
    ("conv_width", None),
    ("conv_in", None),  # input channels of conv2
    ("mel", None),
    ("norm", None),
)
