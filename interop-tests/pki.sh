#!/usr/bin/env bash
# Makes the test PKI of the TLS interop tests with the openssl CLI:
#
#   bash interop-tests/pki.sh DIR
#
# writes into DIR (created if missing; nothing is redone once DIR/.done exists):
#
#   ca.pem ca.key                   "Ordo Test CA", the CA the tests trust
#   server.pem server.key           server certificate from ca for 127.0.0.1
#                                   (subjectAltName IP:127.0.0.1, DNS:localhost),
#                                   EC P-256 key in PKCS#8
#   server-sec1.key                 the same key in SEC1 ("EC PRIVATE KEY")
#   server-rsa.pem server-rsa.key   the same names, RSA 2048 key in PKCS#1
#                                   ("RSA PRIVATE KEY")
#   intermediate.pem intermediate.key
#                                   "Ordo Test Intermediate CA", signed by ca
#   chain.pem chain.key             server certificate from the intermediate CA,
#                                   chain.pem holding it and then the
#                                   intermediate (a client trusts ca.pem only)
#   other-ca.pem other-ca.key       "Ordo Other CA", unrelated to ca
#   other-server.pem other-server.key
#                                   server certificate from other-ca, same names
#   alice.pem alice.key             client certificate CN=alice from ca
#   bob.pem bob.key                 client certificate CN=bob from ca
#   other-alice.pem other-alice.key client certificate CN=alice from other-ca
#
# Certificates are X.509 v3, valid for 30 days from now, with the extensions
# a strict verifier (rustls/webpki) insists on: CAs have basicConstraints
# CA:TRUE and keyUsage keyCertSign; server certificates extendedKeyUsage
# serverAuth, client certificates clientAuth. Every key except server-rsa.key
# is PKCS#8, as `openssl genpkey` writes them.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR="$1"
mkdir -p "$DIR"
cd "$DIR"
[ -e .done ] && exit 0

OPENSSL="${OPENSSL:-openssl}"
DAYS=30

ec_key() { # FILE
    "$OPENSSL" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

serial() {
    echo "0x$("$OPENSSL" rand -hex 8)"
}

# ca NAME "CN" [ISSUER]: a CA certificate NAME.pem with key NAME.key,
# self-signed or (with ISSUER) signed by ISSUER.
ca() {
    local name="$1" cn="$2" issuer="${3:-}"
    ec_key "$name.key"
    cat >"$name.ext" <<EOF
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    if [ -z "$issuer" ]; then
        "$OPENSSL" req -x509 -new -key "$name.key" -subj "/O=Ordo interop tests/CN=$cn" \
            -days "$DAYS" -sha256 -set_serial "$(serial)" -extensions v3 \
            -config <(printf '[req]\ndistinguished_name = dn\n[dn]\n[v3]\n'; cat "$name.ext") \
            -out "$name.pem"
    else
        leaf_from "$name" "$cn" "$issuer" "$name.ext"
    fi
    rm -f "$name.ext"
}

# leaf_from NAME "CN" ISSUER EXTFILE: signs a certificate for NAME.key.
leaf_from() {
    local name="$1" cn="$2" issuer="$3" ext="$4"
    "$OPENSSL" req -new -key "$name.key" -subj "/O=Ordo interop tests/CN=$cn" -out "$name.csr"
    "$OPENSSL" x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" \
        -set_serial "$(serial)" -days "$DAYS" -sha256 -extfile "$ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr"
}

# server NAME ISSUER [KEYTYPE]: a server certificate for 127.0.0.1 / localhost.
server() {
    local name="$1" issuer="$2" keytype="${3:-ec}"
    if [ "$keytype" = rsa ]; then
        "$OPENSSL" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null |
            "$OPENSSL" rsa -traditional -out "$name.key" 2>/dev/null
    else
        ec_key "$name.key"
    fi
    cat >"$name.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    leaf_from "$name" localhost "$issuer" "$name.ext"
    rm -f "$name.ext"
}

# client NAME "CN" ISSUER: a client certificate.
client() {
    local name="$1" cn="$2" issuer="$3"
    ec_key "$name.key"
    cat >"$name.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    leaf_from "$name" "$cn" "$issuer" "$name.ext"
    rm -f "$name.ext"
}

ca ca "Ordo Test CA"
ca other-ca "Ordo Other CA"
ca intermediate "Ordo Test Intermediate CA" ca

server server ca
"$OPENSSL" ec -in server.key -out server-sec1.key 2>/dev/null
server server-rsa ca rsa
server chain intermediate
cat intermediate.pem >>chain.pem
server other-server other-ca

client alice alice ca
client bob bob ca
client other-alice alice other-ca

# Fail here, not in a test, if the PKI is not what it should be.
"$OPENSSL" verify -CAfile ca.pem server.pem server-rsa.pem alice.pem bob.pem >/dev/null
"$OPENSSL" verify -CAfile ca.pem -untrusted intermediate.pem chain.pem >/dev/null
"$OPENSSL" verify -CAfile other-ca.pem other-server.pem other-alice.pem >/dev/null
grep -q 'BEGIN PRIVATE KEY' server.key
grep -q 'BEGIN EC PRIVATE KEY' server-sec1.key
grep -q 'BEGIN RSA PRIVATE KEY' server-rsa.key

touch .done
