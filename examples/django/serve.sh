#!/usr/bin/env bash
# Serves the dermal example site with gunicorn on the bundled demo model:
#   bash examples/django/serve.sh          # http://127.0.0.1:8000/
# Needs the built library (bash tools/setup.sh). DERMAL_* and GUNICORN_*
# variables set in the environment are passed through (see README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="${DERMAL_BUILD_DIR:-$repo/build}"
. "$repo/tools/onednn-cap.sh"

export DERMAL_LIBRARY="$(realpath -m "${DERMAL_LIBRARY:-$build/capi/libdermal_c.so}")"
if [[ ! -f "$DERMAL_LIBRARY" ]]; then
  echo "serve.sh: $DERMAL_LIBRARY is missing; build it first with: bash tools/setup.sh --build" >&2
  exit 1
fi
export PYTHONPATH="$repo/capi/python:$here${PYTHONPATH:+:$PYTHONPATH}"
export DJANGO_SETTINGS_MODULE=dermal_site.settings
cd "$here"
exec /usr/bin/python3 -m gunicorn -c "$here/gunicorn.conf.py" dermal_site.wsgi:application
