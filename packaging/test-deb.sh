#!/usr/bin/env bash
# Checks the Debian package on this machine: lintian, then install it with
# dpkg, check what it installed, run the installed daemon with the installed
# configuration for one policy request on loopback, reinstall over an edited
# conffile, remove, purge, and check that nothing is left.
#
#   packaging/test-deb.sh build/calloutd_VERSION_ARCH.deb BINARY-VERSION
#
# BINARY-VERSION is what "calloutd version" must print after "calloutd ".
# Installing needs root on Debian: elsewhere this skips loudly, and fails
# under CI=true. It refuses to run if calloutd is already installed (it would
# purge it), and purges the package on any failure.
set -euo pipefail

deb=${1:?usage: $0 DEB BINARY-VERSION}
want_version=${2:?usage: $0 DEB BINARY-VERSION}
pkg=calloutd

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
skip() {
  if [ "${CI:-}" = true ]; then
    fail "$* (CI=true: the package must be tested)"
  fi
  echo "*** test-deb: SKIPPED: $*" >&2
  exit 0
}
ok() { echo "test-deb: ok: $*"; }

[ -f "$deb" ] || fail "no package $deb"

# Lintian first: it needs no root. Errors fail; everything else is printed.
command -v lintian >/dev/null 2>&1 || skip "lintian is not installed (apt-get install lintian)"
echo "test-deb: lintian $deb"
lint_rc=0
lint_out=$(lintian --fail-on error --display-info --pedantic "$deb" 2>&1) || lint_rc=$?
grep -v '^running with root privileges is not recommended!$' <<<"$lint_out" || true
[ "$lint_rc" -eq 0 ] || fail "lintian reported errors (above; exit $lint_rc)"
ok "lintian: no errors"

[ "$(id -u)" -eq 0 ] || skip "not root: cannot install the package"
if [ ! -f /etc/debian_version ] || ! command -v dpkg >/dev/null 2>&1; then
  skip "not Debian: no dpkg"
fi

if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -qv 'not-installed'; then
  fail "$pkg is already installed here (or its configuration is left); the test would purge it: dpkg --purge $pkg first"
fi

user_existed=false
getent passwd calloutd >/dev/null && user_existed=true
run_existed=false
[ -e /run/calloutd ] && run_existed=true
installed=false
daemon_pid=
tmp=$(mktemp -d)

cleanup() {
  local rc=$?
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  if $installed && dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -qv 'not-installed'; then
    echo "test-deb: purging $pkg after a failure" >&2
    dpkg --purge "$pkg" >/dev/null 2>&1 || echo "test-deb: dpkg --purge $pkg failed too" >&2
  fi
  $run_existed || rm -rf /run/calloutd
  if ! $user_existed && getent passwd calloutd >/dev/null; then
    userdel calloutd 2>/dev/null || true
  fi
  if ! $user_existed && getent group calloutd >/dev/null; then
    groupdel calloutd 2>/dev/null || true
  fi
  rm -rf "$tmp"
  if [ $rc -ne 0 ]; then
    echo "test-deb: FAILED (exit $rc)" >&2
  fi
  exit $rc
}
trap cleanup EXIT

# owner_mode PATH prints "user:group mode" (mode in octal, e.g. 2750).
owner_mode() { stat -c '%U:%G %a' "$1"; }
expect_owner_mode() {
  local got
  got=$(owner_mode "$1") || fail "$1 is missing"
  [ "$got" = "$2" ] || fail "$1: got $got, want $2"
  ok "$1 $2"
}

# --- install -------------------------------------------------------------
deb_version=$(dpkg-deb -f "$deb" Version)
echo "test-deb: dpkg -i $deb"
installed=true
dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -i failed"; }
status=$(dpkg-query -W -f='${Status} ${Version}' "$pkg")
[ "$status" = "install ok installed $deb_version" ] || fail "dpkg-query: got \"$status\""
ok "installed $pkg $deb_version"

got=$(/usr/sbin/calloutd version)
[ "$got" = "calloutd $want_version" ] || fail "calloutd version: got \"$got\", want \"calloutd $want_version\""
ok "calloutd version: $got"

# The account.
entry=$(getent passwd calloutd) || fail "no calloutd user"
IFS=: read -r _ _ uid gid _ home shell <<<"$entry"
[ "$(getent group calloutd | cut -d: -f3)" = "$gid" ] || fail "calloutd's primary group is not calloutd"
[ "$uid" -lt 1000 ] || fail "calloutd is not a system user (uid $uid)"
if [ "$home" != /nonexistent ] || [ "$shell" != /usr/sbin/nologin ]; then
  fail "calloutd user: home $home, shell $shell"
fi
[ ! -e /nonexistent ] || fail "/nonexistent exists"
ok "system user calloutd (uid $uid, $home, $shell)"

# The files.
for f in /usr/sbin/calloutd /usr/lib/systemd/system/calloutd.service \
  /usr/lib/sysusers.d/calloutd.conf /etc/logrotate.d/calloutd \
  /usr/share/man/man8/calloutd.8.gz /usr/share/man/man5/calloutd.toml.5.gz \
  /usr/share/doc/calloutd/copyright /usr/share/doc/calloutd/changelog.gz \
  /usr/share/doc/calloutd/README.md /usr/share/doc/calloutd/docs/postfix.md \
  /usr/share/lintian/overrides/calloutd; do
  [ -f "$f" ] || fail "$f is missing"
done
ok "files in place"
expect_owner_mode /usr/sbin/calloutd "root:root 755"
expect_owner_mode /etc/calloutd "root:calloutd 750"
expect_owner_mode /etc/calloutd/calloutd.toml "root:calloutd 640"
expect_owner_mode /var/log/calloutd "calloutd:calloutd 750"
grep -q '^ExecStart=/usr/sbin/calloutd serve -config /etc/calloutd/calloutd.toml$' \
  /usr/lib/systemd/system/calloutd.service || fail "unit: no ExecStart=/usr/sbin/calloutd"
! grep -n '^Exec.*/usr/local/' /usr/lib/systemd/system/calloutd.service || fail "unit runs something from /usr/local"
ok "unit runs /usr/sbin/calloutd"
cmp -s /etc/calloutd/calloutd.toml "$(dirname "$0")/../contrib/calloutd.toml" || fail "/etc/calloutd/calloutd.toml differs from contrib/calloutd.toml"
zcat /usr/share/man/man8/calloutd.8.gz | grep -q '^\.Dt CALLOUTD 8' || fail "calloutd.8.gz is not the calloutd(8) page"
[ -e /etc/systemd/system/multi-user.target.wants/calloutd.service ] && fail "the unit was enabled on install"
ok "unit not enabled on a first install"

conffiles=$(dpkg-query -W -f='${Conffiles}' "$pkg")
for f in /etc/calloutd/calloutd.toml /etc/logrotate.d/calloutd; do
  grep -q "^ $f [0-9a-f]\{32\}$" <<<"$conffiles" || fail "$f is not a conffile: $conffiles"
done
ok "conffiles: $(awk '{printf "%s ", $1}' <<<"$conffiles")"

if getent group postfix >/dev/null && [ -d /var/spool/postfix ]; then
  expect_owner_mode /var/spool/postfix/calloutd "calloutd:postfix 2750"
else
  [ ! -e /var/spool/postfix/calloutd ] || fail "socket directory made without Postfix"
  ok "no Postfix here: no socket directory (as intended)"
fi

if command -v logrotate >/dev/null 2>&1; then
  # -d: parse and report, change nothing, run no postrotate.
  logrotate -d -s "$tmp/logrotate.state" /etc/logrotate.d/calloutd >"$tmp/logrotate.out" 2>&1 ||
    { cat "$tmp/logrotate.out" >&2; fail "logrotate -d /etc/logrotate.d/calloutd"; }
  ! grep -i 'error' "$tmp/logrotate.out" || fail "logrotate complains about /etc/logrotate.d/calloutd"
  ok "logrotate accepts /etc/logrotate.d/calloutd"
else
  echo "test-deb: logrotate not installed: its configuration is not checked" >&2
fi

# --- one policy request to the installed daemon ----------------------------
# As the unit runs it: user calloutd, the installed configuration, and
# /run/calloutd made the way RuntimeDirectory= makes it. If its ports are
# taken on this machine (another calloutd running), a copy on free ports.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for p in $(seq 20040 20140); do
    port_busy "$p" || { echo "$p"; return 0; }
  done
  fail "no free port on 127.0.0.1 in 20040-20140"
}
config=/etc/calloutd/calloutd.toml
port=$(sed -n 's/^listen = \["127\.0\.0\.1:\([0-9]*\)"\]$/\1/p' "$config")
[ -n "$port" ] || fail "$config: no listen = [\"127.0.0.1:PORT\"] line"
metrics=$(sed -n 's/^metrics_listen = "127\.0\.0\.1:\([0-9]*\)"$/\1/p' "$config")
busy=
port_busy "$port" && busy="127.0.0.1:$port is in use"
[ -n "$metrics" ] && port_busy "$metrics" && busy="127.0.0.1:$metrics is in use"
$run_existed && busy="/run/calloutd exists"
if [ -n "$busy" ]; then
  port=$(free_port)
  config=$tmp/calloutd.toml
  sed -e "s/^listen = .*/listen = [\"127.0.0.1:$port\"]/" \
    -e 's/^metrics_listen = .*/metrics_listen = ""/' \
    -e 's/^admin_socket = .*/admin_socket = ""/' /etc/calloutd/calloutd.toml >"$config"
  chmod 0755 "$tmp" && chgrp calloutd "$config" && chmod 0640 "$config"
  echo "test-deb: $busy here: using a copy of the installed configuration on 127.0.0.1:$port" >&2
else
  install -d -o calloutd -g calloutd -m 0750 /run/calloutd
fi
as_calloutd() { setpriv --reuid calloutd --regid calloutd --init-groups -- "$@"; }
# What the unit's ExecStartPre runs.
as_calloutd /usr/sbin/calloutd config -check -config "$config" >"$tmp/check.log" 2>&1 ||
  { cat "$tmp/check.log" >&2; fail "calloutd config -check -config $config (as calloutd)"; }
ok "calloutd config -check accepts $config (as calloutd)"
# setpriv itself, not the function: $! must be calloutd's pid (setpriv execs).
setpriv --reuid calloutd --regid calloutd --init-groups -- \
  /usr/sbin/calloutd serve -config "$config" >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do
  port_busy "$port" && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$tmp/daemon.log" >&2; fail "calloutd exited at start"; }
  sleep 0.1
done
port_busy "$port" || { cat "$tmp/daemon.log" >&2; fail "calloutd does not listen on 127.0.0.1:$port"; }

# No route covers this domain, so calloutd answers at once, with no callout.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf '%s\n' request=smtpd_access_policy protocol_state=RCPT protocol_name=ESMTP \
  client_address=192.0.2.1 client_name=client.test helo_name=client.test \
  sender=alice@sender.test recipient=bob@not-routed.test instance=1.test '' >&3
reply=
while IFS= read -r -t 10 line <&3; do
  [ -z "$line" ] && break
  reply+="$line"
done
exec 3>&-
[[ $reply == action=* ]] || { cat "$tmp/daemon.log" >&2; fail "policy reply: got \"$reply\", want action=..."; }
ok "policy round trip on 127.0.0.1:$port: $reply"
kill "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
daemon_pid=
if pgrep -u calloutd >/dev/null; then
  fail "processes of user calloutd still run: $(pgrep -a -u calloutd | tr '\n' ';')"
fi
$run_existed || rm -rf /run/calloutd

# --- upgrade over an edited conffile, remove, purge ------------------------
echo '# edited by test-deb' >>/etc/calloutd/calloutd.toml
dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "reinstall (dpkg -i again) failed"; }
grep -q '^# edited by test-deb$' /etc/calloutd/calloutd.toml || fail "reinstall replaced the edited conffile"
expect_owner_mode /etc/calloutd/calloutd.toml "root:calloutd 640"
ok "reinstall keeps the edited conffile"

dpkg -L "$pkg" >"$tmp/files"
dpkg -r "$pkg" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -r failed"; }
[ ! -e /usr/sbin/calloutd ] || fail "dpkg -r left /usr/sbin/calloutd"
grep -q '^# edited by test-deb$' /etc/calloutd/calloutd.toml || fail "dpkg -r removed the configuration"
ok "dpkg -r keeps /etc/calloutd"

dpkg --purge "$pkg" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg --purge failed"; }
installed=false
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -qv 'not-installed'; then
  fail "still known to dpkg after purge: $(dpkg-query -W -f='${Status}' "$pkg")"
fi
left=()
while IFS= read -r f; do
  # Shared directories (/etc, /usr/share/man/man8...) stay; all of ours go.
  case $f in *calloutd*) [ -e "$f" ] && left+=("$f") ;; esac
done <"$tmp/files"
for f in /etc/calloutd /var/log/calloutd /var/spool/postfix/calloutd /run/calloutd \
  /etc/systemd/system/calloutd.service /etc/systemd/system/multi-user.target.wants/calloutd.service; do
  if [ -e "$f" ] || [ -L "$f" ]; then
    { $run_existed && [ "$f" = /run/calloutd ]; } || left+=("$f")
  fi
done
while IFS= read -r f; do left+=("$f"); done < <(
  find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
    -name '*calloutd*' 2>/dev/null)
if dpkg-statoverride --list | grep -q calloutd; then
  left+=("dpkg-statoverride: $(dpkg-statoverride --list | grep calloutd | tr '\n' ';')")
fi
[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
ok "purge left nothing of the package"

# The account stays on purge, as Debian does with system users.
getent passwd calloutd >/dev/null || fail "purge removed the calloutd user (it should stay)"
ok "calloutd user kept after purge$($user_existed || echo '; removed now, the test made it')"

echo "test-deb: PASS $deb"
