// The server side of TLS: an OpenSSL context loaded from PEM files (TLS_CERT_FILE, TLS_KEY_FILE).
#pragma once

#include <memory>
#include <string>

#include "mq/status.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX, kept out of this header

namespace mqd {

using TlsContext = std::shared_ptr<ssl_ctx_st>;

// A server context with the certificate chain of `cert_file` and the private key of `key_file`
// (PEM both, TLS 1.2 or later). An error names the variable whose file is unreadable, invalid or,
// for the key, does not match the certificate.
mq::Result<TlsContext> tls_context_from_files(const std::string& cert_file, const std::string& key_file);

}  // namespace mqd
