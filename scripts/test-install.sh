#!/usr/bin/env bash
# Proves the C++ package: build the engine, `cmake --install` it into a fresh prefix, check that
# only the package's files landed there, then build examples/cpp against that prefix alone and
# run it (it checks its own results). Reruns are incremental: everything lives under
# build/install-test, and the install keeps the files' times, so an unchanged engine rebuilds
# nothing downstream.
#
#   scripts/test-install.sh                       CUDA off (quick; the CI path)
#   MMSB_WITH_CUDA=AUTO scripts/test-install.sh   CUDA compiled when nvcc is found
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
cuda=${MMSB_WITH_CUDA:-OFF}
work=build/install-test
engine_build=$work/engine-cuda-$cuda
prefix=$root/$work/prefix
example_src=$work/example-src
example_build=$work/example-cuda-$cuda
jobs=$(nproc)
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi

step() { printf '== %s\n' "$*"; }
die() { printf 'test-install: %s\n' "$*" >&2; exit 1; }

step "engine (MMSB_WITH_CUDA=$cuda) in $engine_build"
cmake -S . -B "$engine_build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMMSB_WITH_CUDA="$cuda" \
  -DMMSB_BUILD_TESTS=OFF -DMMSB_BUILD_BENCHMARKS=OFF -DMMSB_BUILD_PYTHON=OFF -DMMSB_INSTALL=ON >/dev/null
cmake --build "$engine_build" -j "$jobs"

# A fresh prefix each run, so a file the rules no longer install cannot linger and pass the check.
step "install into $prefix"
rm -rf "$prefix"
cmake --install "$engine_build" --prefix "$prefix" >/dev/null

# Only the package: headers under include/mmsb, the static engine, the CMake package files.
unexpected=$(cd "$prefix" && find . -type f -o -type l | sed 's|^\./||' | { grep -Ev \
  '^include/mmsb/.+\.hpp$|^lib[^/]*/libmmsb_engine\.a$|^lib[^/]*/cmake/mmsb/mmsb(Config|ConfigVersion|Targets|Targets-release)\.cmake$' || true; })
[[ -z $unexpected ]] || die "unexpected files installed:"$'\n'"$unexpected"
for f in include/mmsb/engine/Bus.hpp include/mmsb/BuildConfig.hpp; do
  [[ -f $prefix/$f ]] || die "$f was not installed"
done
printf '%s files installed\n' "$(find "$prefix" -type f | wc -l)"

# The consumer builds from a copy, so nothing but the prefix can lead it to mmsb's headers.
step "example against the installed package"
mkdir -p "$example_src"
cp -p examples/cpp/CMakeLists.txt examples/cpp/main.cpp "$example_src"/
cmake -S "$example_src" -B "$example_build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
found=$(sed -n 's/^mmsb_DIR:PATH=//p' "$example_build/CMakeCache.txt")
[[ $found == "$prefix"/* ]] || die "find_package(mmsb) used $found, not the installed package"
if grep -qF -e "$root/cpp/" -e "$root/$engine_build/" "$example_build/compile_commands.json"; then
  die "the example compiles against the source or build tree, not the installed headers"
fi
cmake --build "$example_build" -j "$jobs"

step "run"
"$example_build/mmsb_example"
