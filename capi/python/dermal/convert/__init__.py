"""Converters that write dermal model files from trained networks:

    python3 -m dermal.convert torchvision --arch efficientnet_v2_s ... --out model.pt
    python3 -m dermal.convert keras model.keras --labels-file labels.txt --out model.pt

`torchvision` exports a torchvision network (dermal.convert.torchvision),
`keras` imports a Keras .keras or .h5 file (dermal.convert.keras); both write
through dermal.convert.modelfile. They need Python torch (and torchvision,
or h5py), which prediction with `import dermal` does not.
"""


class Refusal(Exception):
    """An input a converter refuses; the message is shown to the user as is
    and nothing is written."""
