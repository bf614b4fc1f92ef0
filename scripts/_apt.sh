# Sourced by scripts/install_*.sh (Debian / Ubuntu only): `apt_install WHAT APT-ARGS...` installs with apt-get as
# root or through sudo; WHAT names the software in the error shown where there is no apt-get.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

apt_install() {
    local what="$1"
    shift
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: no apt-get here; install ${what} another way" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q "$@"
}
