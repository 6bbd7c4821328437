#!/bin/sh
# Make a small certificate authority and one certificate per node for TLS
# heartbeat links (docs/security.md's "TLS heartbeat links" section does the same
# steps by hand).
#
#   conf/make-certs.sh FOLDER NAME=SUBJECT_ALT_NAMES ...
#   conf/make-certs.sh conf/tls serv_a=DNS:iam1,IP:10.0.0.1 serv_b=DNS:iam2,IP:10.0.0.2
#
# The CA (FOLDER/ca.crt, FOLDER/ca.key) is made once and reused; each NAME
# gets FOLDER/NAME.crt and FOLDER/NAME.key, valid as a server and as a client
# (mutual TLS). Keys are written readable by their owner only. Keep ca.key
# off the share once the certificates are made.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 FOLDER NAME=SUBJECT_ALT_NAMES ... (e.g. serv_a=DNS:iam1,IP:10.0.0.1)" >&2
    exit 2
fi
dir=$1
shift
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.crt" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 3650 -subj "/CN=iwayfailover CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 644 "$dir/ca.crt"
    echo "made the CA: $dir/ca.crt (its key: $dir/ca.key)"
fi

for spec in "$@"; do
    name=${spec%%=*}
    names=${spec#*=}
    case $spec in
        *=?*) ;;
        *) echo "$0: $spec: expected NAME=SUBJECT_ALT_NAMES, e.g. serv_a=DNS:iam1,IP:10.0.0.1" >&2; exit 2 ;;
    esac
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n' \
        "$names" > "$dir/$name.ext"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 825 -out "$dir/$name.crt" -extfile "$dir/$name.ext" 2>/dev/null
    rm -f "$dir/$name.csr" "$dir/$name.ext"
    chmod 644 "$dir/$name.crt"
    echo "made $dir/$name.crt for $names (its key: $dir/$name.key)"
done
