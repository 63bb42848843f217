#!/bin/sh
# Configures (once) and builds konn in the source tree. Extra arguments go to ./configure.
set -eu
cd "$(dirname "$0")/.."
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
        autoreconf -fi >/dev/null
fi
if [ ! -f Makefile ] || [ configure -nt Makefile ] || [ "$#" -gt 0 ]; then
        ./configure -q "$@"
fi
make -j"$(nproc)" >/dev/null
