# Sourced by the one-command GPU scripts (gpu_session.sh, gpu_overfit.sh) after they set OUT:
# everything printed also goes to $OUT/session.log, `stage` prints a line with the seconds since
# the start, and the wheels carried in .whl (the device image has no torchattacks) are installed
# into /tmp/site and put on PYTHONPATH.
# A script called by another one (gpu_h100.sh runs gpu_overfit.sh) keeps its caller's log, clock
# and installed wheels.
mkdir -p "$OUT"
if [ -z "${GPU_SESSION_LOG:-}" ]; then
  exec > >(tee -a "$OUT/session.log") 2>&1
  export GPU_SESSION_LOG="$OUT/session.log"
fi
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # scripts/*.py import weat_core from the repository
t0=${GPU_T0:-$(date +%s)}
export GPU_T0=$t0
stage() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }

if [ -z "${GPU_WHEELS:-}" ] && compgen -G ".whl/*.whl" > /dev/null; then
  export GPU_WHEELS=1
  stage "installing the carried wheels"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
