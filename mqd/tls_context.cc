#include "tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <fstream>

namespace mqd {
namespace {

// OpenSSL's queued errors as one line (and the queue emptied).
std::string openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char line[256];
    ERR_error_string_n(code, line, sizeof line);
    text += (text.empty() ? "" : "; ") + std::string(line);
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

mq::Status bad_file(const char* variable, const std::string& path, const std::string& why) {
  return mq::Status::invalid_argument(std::string(variable) + "='" + path + "': " + why);
}

}  // namespace

mq::Result<TlsContext> tls_context_from_files(const std::string& cert_file, const std::string& key_file) {
  ERR_clear_error();
  // OpenSSL's own messages do not say which file could not be opened: check that first.
  if (!std::ifstream(cert_file).good()) return bad_file("TLS_CERT_FILE", cert_file, "cannot be read");
  if (!std::ifstream(key_file).good()) return bad_file("TLS_KEY_FILE", key_file, "cannot be read");
  TlsContext context(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!context) return mq::Status::io_error("cannot create a TLS context: " + openssl_errors());
  SSL_CTX* ctx = context.get();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // Writes of the HTTP stream may be partial and retried from another buffer address.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    return bad_file("TLS_CERT_FILE", cert_file, "not a PEM certificate: " + openssl_errors());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return bad_file("TLS_KEY_FILE", key_file, "not a PEM private key: " + openssl_errors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return bad_file("TLS_KEY_FILE", key_file,
                    "does not match the certificate of TLS_CERT_FILE: " + openssl_errors());
  }
  return context;
}

}  // namespace mqd
