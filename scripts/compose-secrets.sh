#!/usr/bin/env bash
# Makes the secret files docker-compose.yml reads, in $SECRETS_DIR (default ./secrets); keeps any
# that exist. Random: the webhook token and Grafana's admin password. Empty until you write them:
# the Slack webhook URL and the SMTP password (Alertmanager then fails to send there, and says so),
# and redis_exporter's map of KATO's Redis address to its password ({} : no password).
# The folder is the owner's only; the files inside are readable by the containers' non-root users.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${SECRETS_DIR:-./secrets}
install -d -m 0700 "$dir"
for name in webhook_token grafana_admin_password slack_api_url smtp_password kato_redis_password_map.json; do
  [ -e "$dir/$name" ] && continue
  case $name in
    webhook_token | grafana_admin_password) head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$dir/$name" ;;
    kato_redis_password_map.json) echo '{}' >"$dir/$name" ;;  # redis_exporter's: address → password
    *) : >"$dir/$name" ;;
  esac
  chmod 0644 "$dir/$name"
  echo "compose-secrets: made $dir/$name"
done
