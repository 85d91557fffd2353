#!/bin/sh
# Writes one C file: `gen.sh N` a unit with enough code for gcc -O2 to work on; `gen.sh main COUNT` the main.
if [ "$1" = main ]; then
  i=1; while [ "$i" -le "$2" ]; do echo "unsigned long unit$i(unsigned long);"; i=$((i + 1)); done
  echo "#include <stdio.h>"
  echo "int main(void) { unsigned long s = 0;"
  i=1; while [ "$i" -le "$2" ]; do echo "  s += unit$i($i);"; i=$((i + 1)); done
  printf '  printf("demo: %%lu\\n", s); return 0; }\n'
  exit 0
fi
n=$1
f=1; while [ "$f" -le 40 ]; do
  cat <<C
static unsigned long f${n}_$f(unsigned long x) {
  unsigned long a[64];
  for (int i = 0; i < 64; i++) a[i] = x * (unsigned long)(i + $f) ^ (x >> (i % 7));
  for (int r = 0; r < 8; r++)
    for (int i = 1; i < 64; i++) a[i] += a[i - 1] * 2654435761u + (unsigned long)r;
  return a[63] % 1000003u;
}
C
  f=$((f + 1))
done
echo "unsigned long unit$n(unsigned long x) { unsigned long s = x;"
f=1; while [ "$f" -le 40 ]; do echo "  s += f${n}_$f(s);"; f=$((f + 1)); done
echo "  return s; }"
