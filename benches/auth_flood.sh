#!/bin/bash
# benches/auth_flood.sh LIMIT [SOURCES] [PACE] [FLOOD]: a release broker with a PLAINTEXT
# listener (the measured client, `oxbow bench`), a SASL_PLAINTEXT one (FLOOD=plain, the
# default: failed PLAIN logins from benches/auth_flood.py, 32 threads) and an SSL one
# (FLOOD=tls: TLS handshakes the client abandons), the flood coming from SOURCES loopback
# addresses (default 1), with authentication.failures_per_address_max = LIMIT and
# password_checks_per_second_max = PACE (default 100); three pairs of 5 s produce runs, without
# and with the flood, alternating. Run it in an empty directory (it writes oxbow.toml, a
# throwaway certificate, data/ and logs there): each run writes ~3 GB.
set -u
SOURCES=${2:-1}
PACE=${3:-100}
FLOOD=${4:-plain}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -days 1 -keyout key.pem -out cert.pem 2>/dev/null
case $FLOOD in
  plain) TARGET=127.0.0.1:19093 WHO=dave ;;
  tls) TARGET=127.0.0.1:19094 WHO=tls: ;;
  *) echo "FLOOD is plain or tls" >&2; exit 2 ;;
esac
B=${OXBOW:-$(dirname "$0")/../target/release/oxbow}
rm -rf data; cat > oxbow.toml <<T
[[kafka_listeners]]
name = "INTERNAL"
address = "127.0.0.1:19092"
[[kafka_listeners]]
address = "127.0.0.1:19093"
security = "SASL_PLAINTEXT"
sasl_mechanisms = ["PLAIN"]
[[kafka_listeners]]
address = "127.0.0.1:19094"
security = "SSL"
tls_cert_file = "cert.pem"
tls_key_file = "key.pem"
[authentication]
failures_per_address_max = $1
password_checks_per_second_max = $PACE
T
$B serve --config oxbow.toml --data-dir data --native-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:19644 > broker.log 2>&1 &
PID=$!
sleep 2
echo dave-pw | $B user create dave --password-stdin --broker 127.0.0.1:19092
for i in 1 2 3; do
  for flood in no yes; do
    if [ $flood = yes ]; then python3 "$(dirname "$0")/auth_flood.py" $TARGET 32 7 $WHO "$SOURCES" > flood.out & FP=$!; fi
    cpu0=$(awk '{print $14+$15}' /proc/$PID/stat)
    out=$($B bench --protocol kafka --workload produce --message-size 1024 --acks 1 --duration 5s --warmup 1s --quiet --broker 127.0.0.1:19092 2>&1 | grep -E "^produced|^publish" | tr -s " " | tr "\n" " ")
    cpu1=$(awk '{print $14+$15}' /proc/$PID/stat)
    if [ $flood = yes ]; then wait $FP; f=$(cat flood.out); else f=""; fi
    echo "run $i flood=$flood broker_cpu_ticks=$((cpu1-cpu0)) $out $f"
  done
done
curl -s 127.0.0.1:19644/metrics | grep -E "^oxbow_authentication_(failures|throttled)_total"
kill $PID; wait $PID 2>/dev/null
