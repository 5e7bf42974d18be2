# The dermal Django example under gunicorn, serving Grad-CAM on 512 MB hosts
# (Render, any Docker host). docs/deploy.md explains every step and setting.
#
#   docker build -t dermal .                                   # Debian 12 (LibTorch 1.13)
#   docker build --build-arg DEBIAN_RELEASE=trixie -t dermal . # Debian 13 (LibTorch 2.6)
#   docker run --rm -p 8000:8000 dermal                        # http://localhost:8000/, demo model
#
# Another model: mount or copy a dermal model file and name it in DERMAL_MODEL
#   docker run --rm -p 8000:8000 -v $PWD/model.pt:/models/model.pt:ro -e DERMAL_MODEL=/models/model.pt dermal
# or bake a Keras model in at build time (paths relative to the build context;
# KERAS_OPTIONS takes any further option of `python3 -m dermal.convert keras`):
#   docker build --build-arg KERAS_MODEL=models/my.keras --build-arg KERAS_LABELS=akiec,bcc,mel,nv -t dermal .
#   docker build --build-arg KERAS_MODEL=models/my.keras \
#     --build-arg KERAS_OPTIONS="--labels-file models/labels.txt --resample lanczos" -t dermal .

ARG DEBIAN_RELEASE=bookworm

# ---- build: compiles libdermal_c.so (and converts a Keras model when asked)
FROM debian:${DEBIAN_RELEASE}-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libtorch-dev libstb-dev libfmt-dev nlohmann-json3-dev libturbojpeg0-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY include include
COPY src src
COPY capi capi
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
      -DDERMAL_BUILD_TESTS=OFF -DDERMAL_BUILD_EXAMPLES=OFF -DDERMAL_BUILD_BENCHMARKS=OFF > /dev/null \
 && cmake --build build -j "$(nproc)" --target dermal_c \
 && mkdir -p /out/lib /out/models \
 && cp build/capi/libdermal_c.so.*.*.* /out/lib/libdermal_c.so \
 && strip --strip-unneeded /out/lib/libdermal_c.so
# The runtime needs exactly the Debian packages that own the libraries
# libdermal_c.so names (LibTorch, fmt, TurboJPEG, the C++ runtime): their
# names differ between releases, so they are read here rather than listed.
RUN for needed in $(objdump -p /out/lib/libdermal_c.so | awk '$1 == "NEEDED" { print $2 }'); do \
      dpkg -S "*/$needed" | cut -d: -f1; \
    done | sort -u | grep -v -- '-dev$' > /out/runtime-packages \
 && cat /out/runtime-packages

# The model served by default: the bundled demo model, or a Keras model
# converted here (the converter needs Python torch and h5py, installed only then).
ARG KERAS_MODEL=
ARG KERAS_LABELS=
ARG KERAS_OPTIONS=
COPY . /context
RUN if [ -z "$KERAS_MODEL" ]; then \
      cp /context/examples/data/demo-model.pt /out/models/model.pt; \
    else \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-torch python3-h5py python3-numpy \
      && cd /context \
      && DERMAL_LIBRARY=/out/lib/libdermal_c.so PYTHONPATH=/context/capi/python \
         python3 -m dermal.convert keras "$KERAS_MODEL" ${KERAS_LABELS:+--labels "$KERAS_LABELS"} $KERAS_OPTIONS \
           --out /out/models/model.pt; \
    fi

# ---- runtime: LibTorch's runtime, Python, Django, gunicorn; no compiler, no -dev package, no apt lists
FROM debian:${DEBIAN_RELEASE}-slim
COPY --from=build /out/runtime-packages /tmp/runtime-packages
# dpkg leaves out documentation, manual pages and translations (as Debian's
# official -slim images are configured).
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
      'path-exclude /usr/share/lintian/*' > /etc/dpkg/dpkg.cfg.d/dermal-slim \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      $(cat /tmp/runtime-packages) python3 python3-numpy python3-django gunicorn \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log /tmp/runtime-packages
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dermal

# The repository's layout, so examples/django/serve.sh runs as it does from a checkout.
WORKDIR /app
COPY --from=build /out/lib/libdermal_c.so lib/libdermal_c.so
COPY --from=build /out/models/model.pt models/model.pt
COPY capi/python/dermal capi/python/dermal
COPY examples/django examples/django
COPY tools/onednn-cap.sh tools/onednn-cap.sh
RUN python3 -m compileall -q capi/python examples/django

# Every DERMAL_*, DJANGO_* and GUNICORN_* setting of the example works as an
# environment variable (examples/django/README.md lists them); these are the
# container's own. PORT is the platform's (Render sets it); GUNICORN_BIND, when
# given, wins over it.
ENV PORT=8000 \
    DERMAL_LIBRARY=/app/lib/libdermal_c.so \
    DERMAL_MODEL=/app/models/model.pt \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER dermal
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
  CMD python3 -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['PORT'], timeout=8)"
CMD ["bash", "-c", "export GUNICORN_BIND=${GUNICORN_BIND:-0.0.0.0:$PORT}; exec examples/django/serve.sh"]
