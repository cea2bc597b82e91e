#!/usr/bin/env bash
# make demo: calloutd on the example configuration (contrib/calloutd.toml,
# memory cache) with a demo backend that knows two mailboxes, then the
# commands an admin uses, each with a line saying what it shows. Everything
# runs on loopback, in one temporary directory, and is stopped and removed
# on exit (Ctrl-C and failures included). See README.md, "See it work".
#
# Environment:
#   GO                   the go command (default: go)
#   CALLOUTD_DEMO_PORTS  "LISTEN METRICS BACKEND": run on these loopback
#                        ports instead of the example's 10040, 10041 and
#                        2526 (internal/demo/backend/demo_test.go does, so
#                        that it never meets a demo or a calloutd you run)
set -Eeuo pipefail

cd "$(dirname "$0")/../.."
example=contrib/calloutd.toml
GO=${GO:-go}
users=(alice bob)

if [ -t 1 ]; then bold=$'\e[1m' dim=$'\e[2m' off=$'\e[0m'; else bold='' dim='' off=''; fi
step() { printf '\n%s# %s%s\n' "$bold" "$*" "$off"; }
note() { printf '%s%s%s\n' "$dim" "$*" "$off"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

# --- cleanup: runs on every exit -------------------------------------------
tmp='' calloutd_pid='' backend_pid=''
stop() { # stop PID NAME: SIGTERM, then SIGKILL after 10 s
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "demo: $2 did not stop within 10 s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	local code=$?
	trap - EXIT INT TERM
	stop "$calloutd_pid" calloutd
	stop "$backend_pid" "the demo backend"
	[ -z "$tmp" ] || rm -rf "$tmp"
	if ((code == 0)); then
		step "Done: calloutd and the backend stopped, $tmp removed. Next: README.md, \"Wiring Postfix\"."
	elif [ -n "$tmp" ]; then
		echo "demo: stopped what it started and removed $tmp" >&2
	fi
	exit "$code"
}
trap cleanup EXIT
trap 'echo "demo: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers -------------------------------------------------------------
# busy HOST:PORT: something accepts connections there.
busy() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# http_get HOST:PORT PATH: the body, if the answer is 200.
http_get() {
	local fd status line
	{ exec {fd}<>"/dev/tcp/${1%:*}/${1##*:}"; } 2>/dev/null || return 1
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&"$fd"
	IFS= read -r -t 5 status <&"$fd" || status=''
	while IFS= read -r -t 5 line <&"$fd" && [ "$line" != $'\r' ]; do :; done
	case $status in
	'HTTP/1.'?' 200 '*) ;;
	*)
		exec {fd}>&-
		return 1
		;;
	esac
	while IFS= read -r -t 5 line <&"$fd" || [ -n "$line" ]; do printf '%s\n' "$line"; done
	exec {fd}>&-
}

# wait_for WHAT PID COMMAND...: poll COMMAND every 0.1 s for 10 s, while
# PID lives.
wait_for() {
	local what=$1 pid=$2 log=$3 i
	shift 3
	for ((i = 0; i < 100; i++)); do
		"$@" && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			sed 's/^/  /' "$log" >&2
			die "$what exited before it was ready (its output is above)"
		fi
		sleep 0.1
	done
	sed 's/^/  /' "$log" >&2
	die "$what was not ready within 10 s (its output is above)"
}

# show COMMAND...: print it as typed, then run it in the demo directory,
# where "calloutd" and "demo.toml" are the ones built and written below.
show() {
	printf '$ %s\n' "$*"
	(cd "$tmp" && PATH="$tmp:$PATH" "$@")
}

# The request Postfix's smtpd sends for RCPT TO:<$1> from a plain SMTP
# client (SMTPD_POLICY_README, "Protocol description"): every attribute,
# in Postfix's order, the empty ones too.
policy_request() {
	cat <<-EOF
		request=smtpd_access_policy
		protocol_state=RCPT
		protocol_name=ESMTP
		helo_name=mail.sender.example
		queue_id=
		sender=someone@sender.example
		recipient=$1
		recipient_count=0
		client_address=192.0.2.25
		client_name=mail.sender.example
		reverse_client_name=mail.sender.example
		instance=1b2c.67d3a1f0.8e4a1.0
		sasl_method=
		sasl_username=
		sasl_sender=
		size=2048
		ccert_subject=
		ccert_issuer=
		ccert_fingerprint=
		encryption_protocol=
		encryption_cipher=
		encryption_keysize=0
		etrn_domain=
		stress=
		ccert_pubkey_fingerprint=
		client_port=49152
		policy_context=
		server_address=192.0.2.1
		server_port=25
		compatibility_level=3.6
		mail_version=3.7.11
	EOF
}

# policy RECIPIENT [full]: one policy round trip with calloutd, as Postfix
# makes it: the request, an empty line, then read the reply up to its
# empty line. Prints the reply; with "full", the request too (its first
# lines).
policy() {
	local fd line n=0 reply=() ended=''
	local -a req
	mapfile -t req < <(policy_request "$1")
	if [ "${2:-}" = full ]; then
		printf '  → %s\n' "${req[@]}" | grep -E '→ (request|protocol_state|client_address|sender|recipient)='
		note "  → ... $((${#req[@]} - 5)) more attributes (all Postfix sends), then an empty line"
	fi
	{ exec {fd}<>"/dev/tcp/${listen%:*}/${listen##*:}"; } 2>/dev/null ||
		die "cannot connect to calloutd on $listen"
	printf '%s\n' "${req[@]}" '' >&"$fd"
	while IFS= read -r -t 10 line <&"$fd"; do
		[ -n "$line" ] || {
			ended=1
			break
		}
		reply+=("$line")
		((++n < 10)) || break
	done
	exec {fd}>&-
	[ -n "$ended" ] || die "calloutd sent no complete reply for $1 within 10 s (got: ${reply[*]:-nothing})"
	printf '  ← %s\n' "${reply[@]}"
	[ "${2:-}" != full ] || note "  ← (empty line)"
}

# backend_saw: the backend's log since the last call.
seen=1
backend_saw() {
	local n
	n=$(wc -l <"$tmp/backend.log")
	if ((n < seen)); then
		echo "  backend: nothing (no callout)"
	else
		sed -n "${seen},${n}p" "$tmp/backend.log" | sed 's/^/  /'
	fi
	seen=$((n + 1))
}

# verdict_log RECIPIENT: calloutd's last verdict line for RECIPIENT, its
# main keys.
verdict_log() {
	grep " INF verdict .*recipient=$1 " "$tmp/calloutd.log" | tail -n 1 |
		grep -o 'recipient=[^ ]* verdict=[^ ]* cached=[^ ]* action=\("[^"]*"\|[^ ]*\)' | sed 's/^/  calloutd log: /'
}

# metrics: calloutd's counters of requests, verdicts, cache and callouts.
metrics() {
	http_get "$metrics" /metrics |
		grep -E '^calloutd_(policy_requests_total|verdicts_total|cache_(hits|misses)_total|backend_attempts_total)[{ ]' || true
}

# --- setup ---------------------------------------------------------------
printf '%scalloutd demo%s: calloutd on %s (memory cache) and a demo backend, on loopback.\n' "$bold" "$off" "$example"
[ -r "$example" ] || die "$example not found: run this from a calloutd checkout (make demo)"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/calloutd-demo.XXXXXX")

# The example's admin socket, /run/calloutd/admin.sock, is for a daemon
# installed by root (systemd's RuntimeDirectory): the demo keeps it in its
# own directory so that it needs no root, meets no installed calloutd and
# leaves nothing behind.
changed="admin_socket"
sed "s|^admin_socket = .*|admin_socket = \"$tmp/admin.sock\"|" "$example" >"$tmp/demo.toml"
if [ -n "${CALLOUTD_DEMO_PORTS:-}" ]; then
	read -r p_listen p_metrics p_backend <<<"$CALLOUTD_DEMO_PORTS"
	[ -n "${p_backend:-}" ] || die "CALLOUTD_DEMO_PORTS must be three ports, \"LISTEN METRICS BACKEND\""
	awk -v l="$p_listen" -v m="$p_metrics" -v b="$p_backend" '
		/^listen = /                  { print "listen = [\"127.0.0.1:" l "\"]"; next }
		/^metrics_listen = /          { print "metrics_listen = \"127.0.0.1:" m "\""; next }
		!done && /^servers = /        { print "servers = [\"127.0.0.1:" b "\"]"; done = 1; next }
		{ print }' "$tmp/demo.toml" >"$tmp/demo.toml.new"
	mv "$tmp/demo.toml.new" "$tmp/demo.toml"
	changed="admin_socket, listen, metrics_listen and the first route's servers (CALLOUTD_DEMO_PORTS)"
fi
listen=$(sed -n 's/^listen = \["\([^"]*\)".*/\1/p' "$tmp/demo.toml")
metrics=$(sed -n 's/^metrics_listen = "\([^"]*\)".*/\1/p' "$tmp/demo.toml")
case $listen in 127.*:* | localhost:*) ;; *) die "$example: listen = \"$listen\": the demo needs a loopback host:port first" ;; esac
case $metrics in 127.*:* | localhost:*) ;; *) die "$example: metrics_listen = \"$metrics\": the demo needs a loopback host:port" ;; esac
for a in "$listen" "$metrics"; do
	! busy "$a" || die "$a is in use (by \"make run\", another demo, or an installed calloutd?): stop that and run make demo again"
done

note "demo.toml = $example changed only in $changed; admin_socket = $tmp/admin.sock"
note "(/run/calloutd is for a daemon installed by root). Building calloutd and the demo backend there ..."
command -v "$GO" >/dev/null || die "$GO not found: the demo builds calloutd with Go (README.md, \"Quick start\")"
"$GO" build -o "$tmp/calloutd" ./cmd/calloutd
"$GO" build -o "$tmp/demo-backend" ./internal/demo/backend

step "Start a demo backend for the example's first route, then calloutd serve -config demo.toml:"
(cd "$tmp" && exec ./demo-backend -config demo.toml -users "$(
	IFS=,
	echo "${users[*]}"
)" >backend.log 2>&1) &
backend_pid=$!
wait_for "the demo backend" "$backend_pid" "$tmp/backend.log" grep -qs '^demo backend: listening' "$tmp/backend.log"
backend_saw
domain=$(sed -n 's/^demo backend: listening on .* for route [^ ]* (\.\{0,1\}\([^,)]*\).*/\1/p' "$tmp/backend.log")
[ -n "$domain" ] || die "cannot read the route's domain from the demo backend's output"
valid=${users[0]}@$domain unknown=nobody@$domain

(cd "$tmp" && exec ./calloutd serve -config demo.toml >calloutd.log 2>&1) &
calloutd_pid=$!
wait_for calloutd "$calloutd_pid" "$tmp/calloutd.log" http_get "$metrics" /readyz >/dev/null
echo "  calloutd: ready (GET /readyz); policy service on $listen, metrics on $metrics, log in calloutd.log"
before=$(metrics)

# --- the tour ------------------------------------------------------------
step "calloutd check asks the backend now, bypassing the cache (its SMTP dialogue cut to RCPT):"
show calloutd check -config demo.toml "$valid" "$unknown" |
	awk '/^\$/ || / action / { print; next } /→ RCPT/ { print; getline; print }' || true
seen=$(($(wc -l <"$tmp/backend.log") + 1))

step "Postfix asks calloutd about $valid (policy protocol, $listen): a callout, then DUNNO."
policy "$valid" full
backend_saw

step "... and about $unknown: the backend says 550 5.1.1, and so does calloutd."
policy "$unknown"
backend_saw

step "The same two again: answered from the cache, the backend hears nothing."
policy "$valid"
policy "$unknown"
backend_saw
verdict_log "$unknown"

step "calloutd lookup shows the daemon's cached verdicts; calloutd flush forgets one (say $unknown was just created)."
show calloutd lookup -config demo.toml "$valid" | grep -E '^\$|verdict|expires' || true
show calloutd lookup -config demo.toml "$unknown" | grep -E '^\$|verdict|expires' || true
show calloutd flush -config demo.toml "$unknown"
show calloutd lookup -config demo.toml "$unknown" || true

step "The Prometheus metrics that moved (GET http://$metrics/metrics):"
after=$(metrics)
awk 'NR == FNR { was[$1] = $2; next } was[$1] != $2 { print "  " $0 }' <(printf '%s\n' "$before") <(printf '%s\n' "$after")
