#!/usr/bin/env bash
# Install the Debian TTS engines of the sourcetrace corpus, and ffmpeg with the codecs of the degraded
# conditions (LAME, Opus, GSM, G.711 in ffmpeg; the AMR-NB encoder in libavcodec-extra), and chromium for the
# browser test of the MLflow UI.
#
# Idempotent and quick when everything is already there. Debian `main` packages come through the
# machine's own apt sources; the contrib/non-free ones (MBROLA voices, Pico) through a PRIVATE
# sources list in a temporary folder that reuses the archive URI of the machine's existing entry,
# so the system's sources are never modified. Runs as root, or through sudo when available.
# Licences: MBROLA voices and SVOX Pico are non-free for some uses; see sourcetrace/data/corpus.
set -euo pipefail

MAIN_PKGS=(sox espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-italp16k
           ffmpeg libavcodec-extra
           chromium)  # headless: the slow tests look at the MLflow UI of a finished sweep in a real browser
NONFREE_PKGS=(mbrola festvox-us1 festvox-us2 festvox-us3 mbrola-us1 mbrola-us2 mbrola-us3 mbrola-de1
              mbrola-de2 mbrola-fr4 mbrola-es2 mbrola-it4 libttspico-utils libttspico0 libttspico-data)

missing() {  # print the packages of "$@" that dpkg does not report as installed
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "setup_engines: need root or sudo to install: $(missing "${MAIN_PKGS[@]}" "${NONFREE_PKGS[@]}" | xargs)" >&2
    exit 1
fi
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q)

# --- Debian main -----------------------------------------------------------------------------
mapfile -t need_main < <(missing "${MAIN_PKGS[@]}")
if [ "${#need_main[@]}" -gt 0 ]; then
    echo "setup_engines: installing (main): ${need_main[*]}"
    "${APT[@]}" install --no-install-recommends "${need_main[@]}" || {
        "${APT[@]}" update && "${APT[@]}" install --no-install-recommends "${need_main[@]}"; }
fi

# --- Debian contrib / non-free through a private sources list --------------------------------
mapfile -t need_nonfree < <(missing "${NONFREE_PKGS[@]}")
if [ "${#need_nonfree[@]}" -eq 0 ]; then
    echo "setup_engines: all TTS engines installed"
    exit 0
fi

# shellcheck disable=SC1091
CODENAME="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[ -n "$CODENAME" ] || { echo "setup_engines: cannot read VERSION_CODENAME from /etc/os-release" >&2; exit 1; }

archive_uri() {  # the URI of the machine's entry that serves "$CODENAME" (not -security/-updates)
    local f uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri="$(awk -v cn="$CODENAME" '
            BEGIN { RS=""; FS="\n" }
            { u=""; s=""; ok=0
              for (i = 1; i <= NF; i++) {
                  if ($i ~ /^URIs:/)   { u = $i; sub(/^URIs:[ \t]*/, "", u); split(u, a, /[ \t]+/); u = a[1] }
                  if ($i ~ /^Suites:/) { s = " " $i " "; if (s ~ (" " cn " ")) ok = 1 }
              }
              if (ok && u != "") { print u; exit } }' "$f")"
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri="$(awk -v cn="$CODENAME" '$1 == "deb" {
                   i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                   if ($(i+1) == cn) { print $i; exit } }' "$f")"
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
}
URI="$(archive_uri)"
[ -n "$URI" ] || { echo "setup_engines: no apt source entry for '$CODENAME' found to reuse" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/lists/partial"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SIGNED=""
[ -f "$KEYRING" ] && SIGNED=" [signed-by=$KEYRING]"
# main is listed too so that dependencies from main resolve against the private package lists.
echo "deb${SIGNED} $URI $CODENAME main contrib non-free" > "$TMP/private.list"
chmod -R a+rX "$TMP"
PRIV=(-o "Dir::Etc::SourceList=$TMP/private.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$TMP/lists")

echo "setup_engines: installing (contrib/non-free): ${need_nonfree[*]}"
"${APT[@]}" "${PRIV[@]}" update
"${APT[@]}" "${PRIV[@]}" install --no-install-recommends "${need_nonfree[@]}"
still="$(missing "${MAIN_PKGS[@]}" "${NONFREE_PKGS[@]}" | xargs)"
[ -z "$still" ] || { echo "setup_engines: still missing after install: $still" >&2; exit 1; }
echo "setup_engines: all TTS engines installed"
