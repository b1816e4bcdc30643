#!/usr/bin/env bash
# Runs one fuzz target briefly: test/tools/fuzz.sh PACKAGE TARGET FUZZTIME
#
# A finding (go test writes the input under the package's testdata/fuzz/TARGET and fails) fails
# at once. The fuzzing engine itself can fail on a loaded machine without any finding (its
# coordinator gives up on a slow worker); that is reported and retried once, and a second failure
# fails too. The output is shown whenever a run fails.
set -uo pipefail
pkg=$1 target=$2 fuzztime=$3
dir=$(go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$target
before=$(ls "$dir" 2>/dev/null | wc -l)
for attempt in 1 2; do
	if out=$(go test -run '^$' -fuzz "^$target\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
		exit 0
	fi
	echo "$out" | tail -30 >&2
	if [ "$(ls "$dir" 2>/dev/null | wc -l)" -ne "$before" ]; then
		echo "fuzz.sh: $target found a failing input, saved in $dir" >&2
		exit 1
	fi
	echo "fuzz.sh: $target failed without a finding (attempt $attempt)" >&2
done
exit 1
