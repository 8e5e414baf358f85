#!/usr/bin/env bash
# runc with CAP_SYS_RESOURCE taken out of the container's capability sets (create, run) and out
# of an exec'd process's (exec), then the real runc. hack/kind/image.sh installs it as dockerd's
# default runtime on machines whose capability bounding set lacks CAP_SYS_RESOURCE: there runc
# cannot grant it, so `docker run --privileged` (every kind node) and `docker exec` into such a
# container fail with "unable to apply caps: operation not permitted". The capability could
# never be had on such a machine, so dropping it changes nothing else.
set -euo pipefail

# drop rewrites an OCI runtime spec (config.json, with .process) or process spec (exec's
# --process file, the process object itself) in place, keeping the file's mode and owner.
drop() {
	local file=$1 tmp
	[[ -f $file ]] || return 0
	tmp=$(mktemp)
	jq '
		def without: with_entries(.value |= (if type == "array" then map(select(. != "CAP_SYS_RESOURCE")) else . end));
		if has("process") then
			(if .process.capabilities then .process.capabilities |= without else . end)
		elif .capabilities then .capabilities |= without
		else . end' "$file" >"$tmp"
	cat "$tmp" >"$file"
	rm -f "$tmp"
}

# runc's global flags come before the command; of each command's flags only --bundle (create,
# run; default: the current directory) and --process (exec) matter here.
command="" bundle="." process=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	arg=${args[i]}
	if [[ -z $command ]]; then
		case $arg in
		create | run | exec) command=$arg ;;
		esac
		continue
	fi
	case $arg in
	--bundle | -b) bundle=${args[i + 1]:-.} ;;
	--bundle=*) bundle=${arg#--bundle=} ;;
	--process | -p) process=${args[i + 1]:-} ;;
	--process=*) process=${arg#--process=} ;;
	esac
done

case $command in
create | run) drop "$bundle/config.json" ;;
exec) [[ -z $process ]] || drop "$process" ;;
esac

exec runc "$@"
