#!/usr/bin/env bash
# Compares this host's kernel settings and limits with what im-gateway recommends for
# ~1M connections (config/sysctl.d/99-im-gateway.conf), or installs the deploy kit.
#   scripts/tune-host.sh --check   print current against recommended; exit 1 if short
#   scripts/tune-host.sh --apply   install sysctl.d and limits.d files (root), load them,
#                                  then check again
# The gateway runs the same comparison at start and logs a warning per shortfall.
set -euo pipefail
cd "$(dirname "$0")/.."
SYSCTL_FILE=config/sysctl.d/99-im-gateway.conf
LIMITS_FILE=config/limits.d/im-gateway.conf

usage() { echo "usage: $0 --check | --apply" >&2; exit 2; }

# How each setting compares (mirrors src/host.rs): min[:field] = at least, max = at
# most, span = range at least as wide, eq = exactly, info = shown, not judged.
rule() {
    case "$1" in
        net.core.somaxconn|net.ipv4.tcp_max_syn_backlog|fs.nr_open|fs.file-max|net.core.netdev_max_backlog|net.core.rmem_max|net.core.wmem_max) echo min:1 ;;
        net.ipv4.tcp_mem) echo min:3 ;;
        net.ipv4.tcp_fin_timeout) echo max:1 ;;
        net.ipv4.ip_local_port_range) echo span ;;
        net.ipv4.tcp_tw_reuse|net.ipv4.tcp_migrate_req) echo eq ;;
        *) echo info ;;
    esac
}

# Trims and squeezes whitespace (tabs in /proc values) to single spaces.
squeeze() { echo "$1" | tr -s ' \t' '  ' | sed 's/^ //; s/ $//'; }

field() { echo "$1" | awk -v i="$2" '{print $i}'; }

judge() { # rule current recommended -> ok | SHORT | differs
    local r=$1 cur=$2 rec=$3
    case "$r" in
        min:*) local i=${r#min:}; [ "$(field "$cur" "$i")" -ge "$(field "$rec" "$i")" ] && echo ok || echo SHORT ;;
        max:*) local i=${r#max:}; [ "$(field "$cur" "$i")" -le "$(field "$rec" "$i")" ] && echo ok || echo SHORT ;;
        span) [ $(( $(field "$cur" 2) - $(field "$cur" 1) )) -ge $(( $(field "$rec" 2) - $(field "$rec" 1) )) ] && echo ok || echo SHORT ;;
        eq) [ "$cur" = "$rec" ] && echo ok || echo SHORT ;;
        *) [ "$cur" = "$rec" ] && echo ok || echo differs ;;
    esac
}

check() {
    local short=0 key value cur verdict
    printf '%-32s %-28s %-28s %s\n' setting current recommended verdict
    while IFS='=' read -r key value; do
        key=$(squeeze "$key"); value=$(squeeze "$value")
        case "$key" in ''|\#*|\;*) continue ;; esac
        if cur=$(cat "/proc/sys/${key//.//}" 2>/dev/null); then
            cur=$(squeeze "$cur")
            verdict=$(judge "$(rule "$key")" "$cur" "$value")
        else
            cur=unreadable; verdict=SHORT
        fi
        [ "$verdict" = SHORT ] && short=$((short + 1))
        printf '%-32s %-28s %-28s %s\n' "$key" "$cur" "$value" "$verdict"
    done < "$SYSCTL_FILE"
    local soft hard rec_nofile
    soft=$(ulimit -Sn); hard=$(ulimit -Hn)
    rec_nofile=$(awk '$3 == "nofile" && $2 == "hard" {print $4}' "$LIMITS_FILE")
    verdict=ok
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$rec_nofile" ]; then verdict="SHORT (this shell; the unit sets LimitNOFILE)"; fi
    printf '%-32s %-28s %-28s %s\n' "RLIMIT_NOFILE (soft/hard)" "$soft/$hard" "$rec_nofile" "$verdict"
    echo
    if [ "$short" -gt 0 ]; then
        echo "$short setting(s) short of the recommendation: run $0 --apply as root"
        return 1
    fi
    echo "all kernel settings meet the recommendation"
}

apply() {
    if [ "$(id -u)" -ne 0 ]; then echo "--apply needs root" >&2; exit 1; fi
    install -m 0644 "$SYSCTL_FILE" /etc/sysctl.d/99-im-gateway.conf
    install -d /etc/security/limits.d
    install -m 0644 "$LIMITS_FILE" /etc/security/limits.d/im-gateway.conf
    # Load our file last so it wins over distribution defaults for these keys.
    sysctl --system >/dev/null
    sysctl -p /etc/sysctl.d/99-im-gateway.conf >/dev/null
    echo "installed /etc/sysctl.d/99-im-gateway.conf and /etc/security/limits.d/im-gateway.conf"
    echo "the systemd unit is config/systemd/im-gateway.service (see docs/DEPLOY.md)"
    echo
    check
}

case "${1:-}" in
    --check) check ;;
    --apply) apply ;;
    *) usage ;;
esac
