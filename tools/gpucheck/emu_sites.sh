#!/bin/sh
# The kernel launch sites of src/cuda that an emulated run never reached:
#   SVIR_EMU_SITES=sites.txt ./gpucheck-emu --emu; ./emu_sites.sh sites.txt
# (make run-emu and run-emu-asan do this). The run writes one line per site
# it reached, "file:line kernel count"; a site inside a macro's body is
# recorded at the macro's use, so it counts as reached when its file ran the
# same kernel (for a template, with the same last template argument). Prints one line per site not reached and a count; exits 0: a
# site no check reaches is listed, not an error.
set -eu
ran=${1:?usage: emu_sites.sh SITES_FILE}
here=$(cd "$(dirname "$0")" && pwd)
awk '
FNR == NR {                       # the sites that ran: "file:line kernel ... count"
  split($1, fl, ":")
  at[$1] = 1
  name = $0; sub(/^[^ ]* /, "", name); sub(/ [0-9]+$/, "", name)
  kern[fl[1] "|" name] = 1
  next
}
/SVIR_LAUNCH\(/ && !/#define/ {
  n = split(FILENAME, parts, "/"); f = parts[n]
  total++
  if ((f ":" FNR) in at) next
  hit = 0
  for (k in kern) {
    split(k, kp, "|")
    if (kp[1] != f) continue
    nm = kp[2]
    if (index(nm, "<") == 0) {
      if (index($0, ", " nm ")(") > 0) hit = 1
      continue
    }
    # a template kernel: its name and its last template argument (inside a
    # macro the others arrive substituted)
    base = substr(nm, 1, index(nm, "<") - 1)
    last = nm; sub(/>$/, "", last); sub(/.*[<,] */, "", last)
    if (index($0, ", " base "<") > 0 && (index($0, ", " last ">)(") > 0 || index($0, "<" last ">)(") > 0))
      hit = 1
  }
  if (hit) next
  line = $0; sub(/^[ \t]*/, "", line)
  printf "launch site not reached by the emulated checks: %s:%d %s\n", f, FNR, substr(line, 1, 90)
  missed++
}
END { printf "emulated launch sites: %d of %d reached\n", total - missed, total }
' "$ran" "$here"/../../src/cuda/*.cu
