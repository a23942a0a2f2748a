#!/usr/bin/env bash
# Services the full test suite needs beyond Python: Debian's Chromium (the web page's browser test) and
# a throwaway PostgreSQL server (the feedback log's PostgreSQL tests). Source it before pytest:
#   source scripts/test-services.sh
# It installs what is missing (apt, as root), starts PostgreSQL on a Unix socket in a temporary folder,
# exports LIFELORA_TEST_POSTGRES and the LIFELORA_REQUIRE_* flags (so those tests fail rather than skip
# when their service is missing) and stops the server when the shell exits.
say() { echo "test-services: $*" >&2; }
if ! command -v chromium >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium and postgresql (apt)"
    (apt-get install -y -q chromium postgresql >/dev/null 2>&1 ||
      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium postgresql >/dev/null 2>&1)) ||
      say "apt could not install chromium/postgresql"
  fi
fi
export LIFELORA_REQUIRE_BROWSER=1
INITDB=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
if [ -n "$INITDB" ] && id postgres >/dev/null 2>&1; then
  PGBIN=$(dirname "$INITDB")
  PGTMP=$(mktemp -d /tmp/lifelora-pg.XXXXXX)
  chown postgres "$PGTMP"
  as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  if as_postgres "$PGBIN/initdb" -D "$PGTMP/data" -A trust -U postgres >/dev/null &&
     as_postgres "$PGBIN/pg_ctl" -D "$PGTMP/data" -o "-k $PGTMP -c listen_addresses=''" -l "$PGTMP/log" -w start >/dev/null; then
    export LIFELORA_TEST_POSTGRES="postgresql:///postgres?host=$PGTMP&user=postgres"
    export LIFELORA_REQUIRE_POSTGRES=1
    trap 'as_postgres "$PGBIN/pg_ctl" -D "$PGTMP/data" -m fast stop >/dev/null 2>&1; rm -rf "$PGTMP"' EXIT
    say "PostgreSQL on $PGTMP"
  else
    say "PostgreSQL did not start (see $PGTMP/log)"
  fi
fi
