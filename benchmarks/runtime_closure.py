#!/usr/bin/python3
"""Every shared library a process serving dermal has loaded, with its size on disk (a measurement, not a test).

    /usr/bin/python3 benchmarks/runtime_closure.py --model MODEL --photo PHOTO [--markdown]

Loads the model through the Python package (DERMAL_LIBRARY or the package's
own lookup), makes one Grad-CAM prediction of the photo, then lists every
shared library mapped into this process (/proc/self/maps), each file once,
with its size, its Debian package (dpkg -S) and whether only OpenCV or FFmpeg
libraries need it: LibTorch's Debian build links both (for Caffe2 operators
dermal never calls), so the dynamic loader maps them and all they need.
Run it inside the runtime image to measure what a host must hold on disk:

    docker run --rm -v $PWD:/repo:ro -w /repo -e PYTHONPATH=/app/capi/python --entrypoint python3 dermal \\
        benchmarks/runtime_closure.py --model /app/models/model.pt --photo examples/data/samples/melanoma_1.jpg
"""
import argparse
import collections
import os
import struct
import subprocess
import sys

MB = 1e6
# Libraries that LibTorch's Debian build links for Caffe2's image and video operators.
OPTIONAL_ROOTS = ("libopencv_", "libavcodec", "libavformat", "libavutil", "libswscale", "libswresample")


def mapped_libraries():
    """Real paths of the shared objects mapped into this process."""
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].startswith("/") and ".so" in os.path.basename(fields[5]):
                paths.add(os.path.realpath(fields[5].strip()))
    return sorted(paths)


def dynamic_names(path):
    """(DT_SONAME or None, [DT_NEEDED names]) of an ELF64 little-endian shared object."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None, []
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return None, []

    def file_offset(address):
        for vaddr, offset, size in loads:
            if vaddr <= address < vaddr + size:
                return address - vaddr + offset
        raise ValueError(f"{path}: address {address:#x} outside its segments")

    entries, soname, strtab = [], None, None
    for at in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, at)
        if tag == 0:
            break
        if tag == 1:
            entries.append(value)
        elif tag == 14:
            soname = value
        elif tag == 5:
            strtab = file_offset(value)

    def string(offset):
        return data[strtab + offset:data.index(b"\0", strtab + offset)].decode()

    return None if soname is None else string(soname), [string(e) for e in entries]


def packages(paths):
    """{path: Debian package} as far as dpkg knows them (merged /usr: also tried without /usr)."""
    owners = {}
    for path in paths:
        for candidate in (path, path[4:] if path.startswith("/usr/") else None):
            if candidate is None:
                continue
            done = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if done.returncode == 0:
                owners[path] = done.stdout.split(":")[0]
                break
    return owners


def reachable(roots, graph, skip):
    """Names reachable from roots in the NEEDED graph, not entering names for which skip() holds."""
    seen, stack = set(), [r for r in roots if not skip(r)]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(n for n in graph.get(name, []) if not skip(n))
    return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--photo", required=True)
    args = parser.parse_args()

    import dermal

    with dermal.Model(args.model) as model:
        result = model.predict(args.photo, explain=True)
        if not result.explanations:
            sys.exit("runtime_closure: the prediction came back without an explanation")
    paths = mapped_libraries()
    sizes = {p: os.path.getsize(p) for p in paths}
    by_name, graph = {}, {}  # the name the loader knows (soname, else the file's name) -> path, NEEDED names
    for p in paths:
        soname, names = dynamic_names(p)
        by_name[soname or os.path.basename(p)] = p
        graph[soname or os.path.basename(p)] = names
    name_of = {p: n for n, p in by_name.items()}
    library = next(p for p in paths if os.path.basename(p).startswith("libdermal_c.so"))
    closure = reachable([name_of[library]], graph, lambda n: False)
    without_optional = reachable([name_of[library]], graph, lambda n: n.startswith(OPTIONAL_ROOTS))
    optional_only = closure - without_optional
    owners = packages(paths)

    def total(names):
        return sum(sizes[by_name[n]] for n in names if n in by_name)

    print(f"Python {sys.version.split()[0]}, dermal {dermal.library_version()}; model {args.model}; one Grad-CAM "
          f"of {args.photo} made")
    print(f"shared libraries mapped: {len(paths)} files, {sum(sizes.values()) / MB:.1f} MB on disk")
    print(f"  {name_of[library]} and what it needs: {len(closure)} files, {total(closure) / MB:.1f} MB")
    print(f"    of which only through OpenCV or FFmpeg (linked by LibTorch's Debian build): "
          f"{len(optional_only)} files, {total(optional_only) / MB:.1f} MB")
    others = [name_of[p] for p in paths if name_of[p] not in closure]
    print(f"  Python, numpy and their modules besides: {len(others)} files, {total(others) / MB:.1f} MB")

    by_package = collections.Counter()
    for p in paths:
        by_package[owners.get(p, "(no package)")] += sizes[p]
    print("\nlargest Debian packages by mapped library size:")
    for package, size in by_package.most_common(15):
        print(f"  {size / MB:7.1f} MB  {package}")

    print("\n| MB | library | Debian package | needed |")
    print("|---:|---|---|---|")
    for p in sorted(paths, key=lambda p: -sizes[p]):
        name = name_of[p]
        why = ("only through OpenCV/FFmpeg" if name in optional_only else
               "by libdermal_c.so" if name in closure else "by Python")
        print(f"| {sizes[p] / MB:.2f} | {os.path.basename(p)} | {owners.get(p, '–')} | {why} |")


if __name__ == "__main__":
    main()
