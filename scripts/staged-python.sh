# Sourced, not run: runs the Python package against an mmsb._core built in a folder of its own
# (scripts/gpu-check.sh, scripts/coverage.sh), leaving .venv and its installed mmsb untouched.
# The caller sets PY (the interpreter) and calls stage_package first.

# stage_package BUILD: python/mmsb and BUILD's _core copied to a fresh folder in /tmp, named in
# PYSTAGE: the package the staged runs import.
stage_package() {
  PYSTAGE=$(mktemp -d /tmp/mmsb-py.XXXXXX)
  cp -r python/mmsb "$PYSTAGE/" && cp "$1"/cpp/bindings/_core*.so "$PYSTAGE/mmsb/"
}

# staged_python SECONDS ARGS...: runs $PY ARGS on the staged package, killed after SECONDS. An
# mmsb installed in that Python (an editable .venv one) would shadow PYTHONPATH, so then site is
# skipped (-S) and site-packages go on the path explicitly.
staged_python() {
  local seconds=$1
  shift
  if "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('mmsb') is None)" 2>/dev/null; then
    local site
    site=$("$PY" -c "import sysconfig as s; p = s.get_paths(); print(p['purelib'] + ':' + p['platlib'])")
    PYTHONPATH="$PYSTAGE:$site" PYTHONUNBUFFERED=1 timeout "$seconds" "$PY" -S "$@"
  else
    PYTHONPATH="$PYSTAGE" PYTHONUNBUFFERED=1 timeout "$seconds" "$PY" "$@"
  fi
}
