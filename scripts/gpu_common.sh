# Sourced by the one-command GPU scripts (gpu_session.sh, gpu_overfit.sh) after they set OUT:
# everything printed also goes to $OUT/session.log, `stage` prints a line with the seconds since
# the start, and the wheels carried in .whl (the device image has no torchattacks) are installed
# into /tmp/site and put on PYTHONPATH.
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stage() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }

if compgen -G ".whl/*.whl" > /dev/null; then
  stage "installing the carried wheels"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
