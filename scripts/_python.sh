# Sourced by scripts/demo and scripts/test (not run on its own).
#
#   vs_python EXTRAS      # e.g. vs_python viewer; then use "$PY"
#
# Picks the Python to use and installs this checkout into it (editable, with the given
# extras), so that the scripts work on Debian/Ubuntu's own python3 (PEP 668 "externally
# managed": no pip install outside a virtual environment):
#
# * inside a virtual environment already (VIRTUAL_ENV set, or sys.prefix != sys.base_prefix):
#   that one's python3;
# * otherwise the project-local .venv/ (created on first use, reused after). When
#   `python3 -m venv` fails because ensurepip is missing (Debian without python3-venv), root
#   installs python3-venv with apt-get; anybody else is told the command;
# * `pip install -e ".[EXTRAS]"` runs only when setup.cfg, pyproject.toml, the extras or the
#   checkout's path changed since the last install into that environment (a stamp file in
#   it holds their hash), or the package is not installed there.

vs_die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

vs_in_venv() {
  python3 -c 'import os, sys
sys.exit(0 if os.environ.get("VIRTUAL_ENV") or sys.prefix != sys.base_prefix else 1)'
}

vs_make_venv() {
  local venv=$1
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    return 0  # reuse
  fi
  rm -rf "$venv"  # missing, half-made, or its base Python is gone
  if python3 -m venv "$venv" >/dev/null 2>&1; then
    return 0
  fi
  rm -rf "$venv"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$(basename "$0"): python3 cannot create a virtual environment (no ensurepip);" \
         "installing python3-venv with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv" || vs_die "python3 -m venv $venv failed"
  else
    vs_die "python3 cannot create a virtual environment (no ensurepip). On Debian/Ubuntu:" \
           "sudo apt-get install python3-venv, then run this again."
  fi
}

vs_python() {
  local extras=$1 prefix stamp want
  command -v python3 >/dev/null 2>&1 || vs_die "python3 not found (Python >= 3.9 needed)"
  if vs_in_venv; then
    PY=python3
  else
    vs_make_venv "$PWD/.venv"
    PY="$PWD/.venv/bin/python"
  fi
  prefix=$("$PY" -c 'import sys; print(sys.prefix)')
  stamp="$prefix/.vuer-sync-install-${extras:-none}.stamp"
  want=$({ cat setup.cfg pyproject.toml; echo "extras=$extras path=$PWD"; } |
         "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
     "$PY" -c 'import importlib.metadata as m; m.version("vuer-sync")' >/dev/null 2>&1; then
    return 0  # installed, and nothing that decides the install changed
  fi
  echo "$(basename "$0"): installing vuer_sync${extras:+[$extras]} into $prefix" \
       "(again only when setup.cfg or pyproject.toml change)" >&2
  "$PY" -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
  echo "$want" >"$stamp"
}
