#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# gen-certs.sh DIR — (re)generate the konn test PKI into DIR.
#
# Produces (EC P-256 keys, SHA-256 signatures, good certificates valid 10 years):
#   ca.crt/ca.key                    test CA "konn-test-ca"
#   server.crt/server.key            CN=konn-server, SAN DNS:localhost DNS:kubernetes IP:127.0.0.1 IP:::1,
#                                    EKU serverAuth+clientAuth
#   agent.crt/agent.key              CN=konn-agent-1, EKU clientAuth
#   client.crt/client.key            CN=kube-apiserver, EKU clientAuth (frontend mTLS)
#   other-ca.crt/other-ca.key        an unrelated CA "konn-other-ca"
#   other-agent.crt/other-agent.key  CN=konn-agent-1 signed by the other CA
#   expired-agent.crt/.key           CN=konn-agent-1 signed by ca, valid 2020-01-01 .. 2021-01-01 only
#   wrongsan-server.crt/.key         signed by ca, SAN DNS:wrong.example only
#   nocn-server.crt/.key             signed by ca, subject O=konn-test (no CN), SAN DNS:nocn.example
# Certificates are mode 0644, keys 0600. Prints nothing on success; on failure the openssl output goes
# to stderr and the exit status is non-zero. Only the openssl(1) CLI of OpenSSL 3 is needed.

set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
        echo "usage: $0 DIR" >&2
        exit 2
fi

OPENSSL=${OPENSSL:-openssl}
dir=$1
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

work=$(mktemp -d "$dir/.gen-certs.XXXXXX")
log=$work/log
cleanup() {
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

umask 077
: >"$log"

# Run openssl quietly; on failure show what it said.
ossl() {
        if ! "$OPENSSL" "$@" >>"$log" 2>&1; then
                echo "gen-certs.sh: openssl $1 failed:" >&2
                cat "$log" >&2
                exit 1
        fi
}

serial() {
        if ! hex=$("$OPENSSL" rand -hex 16); then
                echo "gen-certs.sh: openssl rand failed" >&2
                exit 1
        fi
        echo "0x$hex"
}

cat >"$work/openssl.cnf" <<'EOF'
[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = unused

[ ext_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[ ext_server ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:localhost,DNS:kubernetes,IP:127.0.0.1,IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ ext_wrongsan ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ ext_nocn ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:nocn.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ ext_client ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

# Only used for the expired certificate: "openssl x509" of OpenSSL 3.0 cannot back-date.
[ ca ]
default_ca = konn_ca
[ konn_ca ]
database = $ENV::KONN_CA_DIR/index.txt
new_certs_dir = $ENV::KONN_CA_DIR
serial = $ENV::KONN_CA_DIR/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
EOF
cnf=$work/openssl.cnf
export OPENSSL_CONF="$cnf"
KONN_CA_DIR=$work/ca
export KONN_CA_DIR

newkey() {
        ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$1.key"
}

# selfsign NAME CN
selfsign() {
        newkey "$1"
        sn=$(serial)
        ossl req -config "$cnf" -new -x509 -key "$work/$1.key" -subj "/CN=$2" -days 3650 -sha256 \
                -set_serial "$sn" -extensions ext_ca -out "$work/$1.crt"
}

# issue NAME SUBJECT CA EXTENSIONS
issue() {
        newkey "$1"
        sn=$(serial)
        ossl req -config "$cnf" -new -key "$work/$1.key" -subj "$2" -out "$work/$1.csr"
        ossl x509 -req -in "$work/$1.csr" -CA "$work/$3.crt" -CAkey "$work/$3.key" -set_serial "$sn" \
                -days 3650 -sha256 -extfile "$cnf" -extensions "$4" -out "$work/$1.crt"
}

selfsign ca konn-test-ca
selfsign other-ca konn-other-ca
issue server /CN=konn-server ca ext_server
issue agent /CN=konn-agent-1 ca ext_client
issue client /CN=kube-apiserver ca ext_client
issue other-agent /CN=konn-agent-1 other-ca ext_client
issue wrongsan-server /CN=wrong.example ca ext_wrongsan
issue nocn-server /O=konn-test ca ext_nocn

# Genuinely expired: notBefore 2020-01-01, notAfter 2021-01-01.
newkey expired-agent
ossl req -config "$cnf" -new -key "$work/expired-agent.key" -subj "/CN=konn-agent-1" \
        -out "$work/expired-agent.csr"
mkdir "$work/ca"
: >"$work/ca/index.txt"
ossl rand -hex -out "$work/ca/serial" 16
ossl ca -batch -config "$cnf" -name konn_ca -cert "$work/ca.crt" -keyfile "$work/ca.key" \
        -in "$work/expired-agent.csr" -out "$work/expired-agent.crt" -notext \
        -startdate 20200101000000Z -enddate 20210101000000Z -extfile "$cnf" -extensions ext_client

for name in ca other-ca server agent client other-agent expired-agent wrongsan-server nocn-server; do
        chmod 0644 "$work/$name.crt"
        chmod 0600 "$work/$name.key"
        mv -f "$work/$name.crt" "$dir/$name.crt"
        mv -f "$work/$name.key" "$dir/$name.key"
done
