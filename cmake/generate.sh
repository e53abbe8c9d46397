#!/bin/sh
# cmake/generate.sh LA VERSION SIZEOF_VOID_P PREFIX LIBDIR INCLUDEDIR CMAKEDIR IN OUT
#
# Writes OUT from the template IN (cmake/weftConfig*.cmake.in), replacing
#   @PACKAGE_VERSION@       VERSION (MAJOR.MINOR.PATCH)
#   @WEFT_VERSION_MAJOR@    its first number
#   @WEFT_SIZEOF_VOID_P@    SIZEOF_VOID_P
#   @WEFT_SONAME@           the soname libtool gave the library (dlname in the built LA file)
#   @WEFT_CMAKE_UP@         the path from CMAKEDIR up to PREFIX (e.g. ../../..), or "." when
#                           CMAKEDIR is not below PREFIX
#   @WEFT_CMAKE_LIBDIR@     LIBDIR as "${_weft_prefix}/lib/..." when it is below PREFIX (so the
#   @WEFT_CMAKE_INCLUDEDIR@ installed files can be moved), else the absolute path; INCLUDEDIR alike
# Run by Makefile.am's rules for cmake/weftConfig.cmake and cmake/weftConfigVersion.cmake.
set -eu
[ $# -eq 9 ] || { echo "usage: $0 LA VERSION SIZEOF_VOID_P PREFIX LIBDIR INCLUDEDIR CMAKEDIR IN OUT" >&2; exit 2; }
la=$1 version=$2 sizeof_void_p=$3 prefix=$4 libdir=$5 includedir=$6 cmakedir=$7 in=$8 out=$9

soname=$(sed -n "s/^dlname='\(.*\)'\$/\1/p" "$la")
[ -n "$soname" ] || { echo "$0: no dlname in $la (was the shared library built?)" >&2; exit 1; }
major=${version%%.*}

# relative_to_prefix DIR: prints "${_weft_prefix}/REST" when DIR is PREFIX/REST, else DIR.
# (${_weft_prefix} is CMake's, written as it is.)
# shellcheck disable=SC2016
relative_to_prefix() {
  case $1 in
    "$prefix") printf '%s' '${_weft_prefix}' ;;
    "$prefix"/*) printf '%s/%s' '${_weft_prefix}' "${1#"$prefix"/}" ;;
    *) printf '%s' "$1" ;;
  esac
}
case $cmakedir in
  "$prefix"/*) up=$(printf '%s\n' "${cmakedir#"$prefix"/}" | sed -e 's|[^/][^/]*|..|g') ;;
  *) up=. ;;
esac
if [ "$up" = . ]; then
  # Not below the prefix: absolute paths everywhere.
  cmake_libdir=$libdir cmake_includedir=$includedir
else
  cmake_libdir=$(relative_to_prefix "$libdir")
  cmake_includedir=$(relative_to_prefix "$includedir")
fi

# | is the sed delimiter: none of the values may contain it.
for v in "$version" "$soname" "$up" "$cmake_libdir" "$cmake_includedir"; do
  case $v in *'|'*) echo "$0: '|' in a path is not supported: $v" >&2; exit 1 ;; esac
done
sed -e "s|@PACKAGE_VERSION@|$version|g" \
    -e "s|@WEFT_VERSION_MAJOR@|$major|g" \
    -e "s|@WEFT_SIZEOF_VOID_P@|$sizeof_void_p|g" \
    -e "s|@WEFT_SONAME@|$soname|g" \
    -e "s|@WEFT_CMAKE_UP@|$up|g" \
    -e "s|@WEFT_CMAKE_LIBDIR@|$cmake_libdir|g" \
    -e "s|@WEFT_CMAKE_INCLUDEDIR@|$cmake_includedir|g" \
    "$in" >"$out.tmp"
if grep -n '@[A-Z_]*@' "$out.tmp" >&2; then
  echo "$0: $in has a placeholder this script does not know (above)" >&2
  rm -f "$out.tmp"
  exit 1
fi
mv "$out.tmp" "$out"
