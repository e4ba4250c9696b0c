#include "peerd/daemon/http_message.h"

namespace peerd::daemon {

void FileRegionsBodySource::next(std::function<void(BodyChunk)> deliver) {
  if (next_index_ >= regions_.size()) {
    regions_.clear();  // release pins as soon as the last region is handed over
    deliver(BodyChunk::end());
    return;
  }
  deliver(BodyChunk::region(std::move(regions_[next_index_++])));
}

Response json_response(http::status status, const nlohmann::json& body) {
  Response response;
  response.message.result(status);
  response.message.set(http::field::content_type, "application/json");
  response.message.body() = body.dump() + "\n";
  return response;
}

Response oci_error(http::status status, std::string_view code, std::string_view message,
                   const nlohmann::json& detail) {
  nlohmann::json error = {{"code", code}, {"message", message}};
  if (!detail.is_null()) error["detail"] = detail;
  return json_response(status, nlohmann::json{{"errors", nlohmann::json::array({error})}});
}

Response text_response(http::status status, std::string body, std::string_view content_type) {
  Response response;
  response.message.result(status);
  response.message.set(http::field::content_type, content_type);
  response.message.body() = std::move(body);
  return response;
}

Response content_response(const ContentHead& head, const std::optional<content::ByteRange>& range,
                          std::shared_ptr<BodySource> body, ByteSource source) {
  Response response;
  response.message.result(range ? http::status::partial_content : http::status::ok);
  response.message.set(http::field::content_type, head.media_type);
  response.message.set(http::field::accept_ranges, "bytes");
  if (!head.digest.empty()) response.message.set("Docker-Content-Digest", head.digest);
  if (range)
    response.message.set(http::field::content_range, content::content_range(*range, head.content_bytes));
  response.body_bytes = range ? range->length : head.content_bytes;
  response.body = std::move(body);
  response.source = source;
  return response;
}

Response range_not_satisfiable(uint64_t content_bytes) {
  Response response = oci_error(http::status::range_not_satisfiable, "RANGE_INVALID",
                                "requested range not satisfiable", {{"size", content_bytes}});
  response.message.set(http::field::content_range, content::content_range_unsatisfied(content_bytes));
  return response;
}

}  // namespace peerd::daemon
