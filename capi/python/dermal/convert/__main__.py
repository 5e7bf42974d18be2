"""python3 -m dermal.convert (keras|torchvision) [options]: runs a converter;
`python3 -m dermal.convert CONVERTER --help` lists its options. Exit status:
0 written, 2 refused (bad options or input; nothing written)."""
import importlib
import sys

CONVERTERS = ("keras", "torchvision")
# The Python modules the converters import that Debian packages, by module name.
DEBIAN_PACKAGES = {"torch": "python3-torch", "torchvision": "python3-torchvision", "h5py": "python3-h5py",
                   "numpy": "python3-numpy", "PIL": "python3-pil"}
USAGE = "usage: python3 -m dermal.convert {keras,torchvision} [options] (--help after one for its options)"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{__doc__}")
        return 0
    if argv[0] not in CONVERTERS:
        print(f"{USAGE}\npython3 -m dermal.convert: error: unknown converter {argv[0]!r}", file=sys.stderr)
        return 2
    try:
        converter = importlib.import_module(f"dermal.convert.{argv[0]}")
    except ModuleNotFoundError as error:
        top = (error.name or "").partition(".")[0]
        if top not in DEBIAN_PACKAGES:
            raise
        print(f"python3 -m dermal.convert {argv[0]}: error: needs the Python module {top}, which is not "
              f"installed; on Debian: apt-get install {DEBIAN_PACKAGES[top]}", file=sys.stderr)
        return 2
    return converter.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
