// What the workloads read back from servers and tools: Range responses checked against the planned read,
// peerd's Prometheus counters, and ctr's image list and image documents (index, manifest, platform choice).
#include <gtest/gtest.h>

#include <string>

#include "workloads/common/prometheus_text.h"
#include "workloads/ctr/image_content.h"
#include "workloads/random/random_workload.h"

namespace peerd::workload {
namespace {

PlannedRead read_of(uint64_t offset, uint64_t length) {
  PlannedRead read;
  read.offset_bytes = offset;
  read.length_bytes = length;
  return read;
}

// Shows a 206 passes only with the exact Content-Range (size or "*") and exactly the asked bytes.
TEST(RangeResponse, PartialContentMustMatchTheRead) {
  const auto read = read_of(10, 5);
  EXPECT_TRUE(check_range_response(read, 100, 206, "bytes 10-14/100", 5).ok());
  EXPECT_TRUE(check_range_response(read, 100, 206, "bytes 10-14/*", 5).ok());
  EXPECT_FALSE(check_range_response(read, 100, 206, "bytes 10-14/100", 4).ok());
  EXPECT_FALSE(check_range_response(read, 100, 206, "bytes 10-15/100", 5).ok());
  EXPECT_FALSE(check_range_response(read, 100, 206, "bytes 10-14/99", 5).ok());
  EXPECT_FALSE(check_range_response(read, 100, 206, "", 5).ok());
  EXPECT_NE(check_range_response(read, 100, 206, "bytes 0-4/100", 5).error().find("Content-Range"),
            std::string::npos);
}

// Shows a 200 (server ignored Range) passes only when the read was the whole blob; other statuses fail.
TEST(RangeResponse, WholeBodyOnlyForWholeBlobReads) {
  EXPECT_TRUE(check_range_response(read_of(0, 100), 100, 200, "", 100).ok());
  EXPECT_FALSE(check_range_response(read_of(1, 99), 100, 200, "", 100).ok());
  EXPECT_FALSE(check_range_response(read_of(0, 100), 100, 200, "", 99).ok());
  EXPECT_NE(check_range_response(read_of(0, 1), 100, 404, "", 0).error().find("404"), std::string::npos);
  EXPECT_FALSE(check_range_response(read_of(0, 1), 100, 416, "bytes */100", 0).ok());
}

constexpr std::string_view kMetrics =
    "# HELP peerd_bytes_fetched_total Bytes fetched.\n"
    "# TYPE peerd_bytes_fetched_total counter\n"
    "peerd_bytes_fetched_total{source=\"peer\"} 1048576\n"
    "peerd_bytes_fetched_total{source=\"upstream\"} 77\n"
    "peerd_bytes_fetched_total_extra{source=\"peer\"} 5\n"
    "peerd_requests_total{route=\"blob\",status=\"200\"} 3 1700000000000\r\n"
    "peerd_requests_total{status=\"206\",route=\"blob\"} 4\n"
    "peerd_up 1\n";

// Shows a sample is found by name and label subset, longer names with the same prefix are not confused,
// series matching the labels are summed, timestamps and CRLF are tolerated.
TEST(PrometheusText, FindsAndSumsMatchingSeries) {
  EXPECT_EQ(*prometheus_sample(kMetrics, "peerd_bytes_fetched_total", {{"source", "peer"}}), 1048576);
  EXPECT_EQ(*prometheus_sample(kMetrics, "peerd_bytes_fetched_total", {{"source", "upstream"}}), 77);
  EXPECT_EQ(*prometheus_sample(kMetrics, "peerd_bytes_fetched_total", {}), 1048653);
  EXPECT_EQ(*prometheus_sample(kMetrics, "peerd_requests_total", {{"route", "blob"}}), 7);
  EXPECT_EQ(*prometheus_sample(kMetrics, "peerd_up", {}), 1);
}

// Shows a missing series or a malformed line is an error, not a silent zero.
TEST(PrometheusText, MissingOrMalformedIsAnError) {
  EXPECT_FALSE(prometheus_sample(kMetrics, "peerd_bytes_fetched_total", {{"source", "cache"}}).ok());
  EXPECT_FALSE(prometheus_sample("", "peerd_up", {}).ok());
  EXPECT_FALSE(prometheus_sample("peerd_up{a=\"x} 1\n", "peerd_up", {}).ok());
  EXPECT_FALSE(prometheus_sample("peerd_up one\n", "peerd_up", {}).ok());
  EXPECT_EQ(*prometheus_sample("m{a=\"q\\\"x\"} 2\n", "m", {{"a", "q\"x"}}), 2);  // escaped quote
}

constexpr std::string_view kImagesList =
    "REF                              TYPE                                                 DIGEST            "
    "      "
    "                                                  SIZE     PLATFORMS   LABELS\n"
    "127.0.0.41:5000/test/img:latest  application/vnd.oci.image.manifest.v1+json           "
    "sha256:1111111111111111111111111111111111111111111111111111111111111111 1.2 KiB  linux/amd64 -\n"
    "127.0.0.41:5000/test/img:latest2 application/vnd.oci.image.index.v1+json              "
    "sha256:2222222222222222222222222222222222222222222222222222222222222222 3.4 MiB  "
    "linux/amd64,linux/arm64 -\n";

// Shows the image digest comes from the row whose REF is exactly the asked reference.
TEST(ImageContent, DigestFromImagesList) {
  EXPECT_EQ(image_digest_from_list(kImagesList, "127.0.0.41:5000/test/img:latest"),
            "sha256:1111111111111111111111111111111111111111111111111111111111111111");
  EXPECT_EQ(image_digest_from_list(kImagesList, "127.0.0.41:5000/test/img:latest2"),
            "sha256:2222222222222222222222222222222222222222222222222222222222222222");
  EXPECT_FALSE(image_digest_from_list(kImagesList, "127.0.0.41:5000/test/img").has_value());
  EXPECT_FALSE(image_digest_from_list("", "x").has_value());
}

std::string digest_of(char c) {
  return "sha256:" + std::string(64, c);
}

// Shows a manifest's size is config plus layers and its largest layer is found.
TEST(ImageContent, ManifestSizeAndLargestLayer) {
  const std::string manifest = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
    "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
                               digest_of('c') + R"(","size":100},
    "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" +
                               digest_of('a') + R"(","size":5000},
              {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" +
                               digest_of('b') + R"(","size":7000}]})";
  const auto document = parse_image_document(manifest);
  ASSERT_TRUE(document.ok()) << document.error();
  EXPECT_FALSE(document->is_index);
  EXPECT_EQ(image_bytes(*document), 12100u);
  EXPECT_EQ(largest_layer(*document)->digest, digest_of('b'));
  EXPECT_FALSE(largest_layer(ImageDocument{}).has_value());
}

// Shows an index (OCI or Docker list) yields the manifest for the asked platform, variant optional.
TEST(ImageContent, IndexPlatformSelection) {
  const std::string index =
      R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
    "manifests":[
      {"digest":")" +
      digest_of('1') + R"(","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
      {"digest":")" +
      digest_of('2') + R"(","size":2,"platform":{"os":"linux","architecture":"amd64"}},
      {"digest":")" +
      digest_of('3') + R"(","size":3,"platform":{"os":"windows","architecture":"amd64"}}]})";
  const auto document = parse_image_document(index);
  ASSERT_TRUE(document.ok()) << document.error();
  EXPECT_TRUE(document->is_index);
  EXPECT_EQ(select_manifest(*document, {"linux", "amd64", ""})->digest, digest_of('2'));
  EXPECT_EQ(select_manifest(*document, {"linux", "arm64", ""})->digest, digest_of('1'));
  EXPECT_EQ(select_manifest(*document, {"linux", "arm64", "v8"})->digest, digest_of('1'));
  EXPECT_FALSE(select_manifest(*document, {"linux", "arm64", "v7"}).has_value());
  EXPECT_FALSE(select_manifest(*document, {"linux", "s390x", ""}).has_value());
}

// Shows malformed documents are errors (never exceptions): not JSON, wrong shapes, bad digests, wrong types.
TEST(ImageContent, MalformedDocumentsAreErrors) {
  EXPECT_FALSE(parse_image_document("not json").ok());
  EXPECT_FALSE(parse_image_document("[]").ok());
  EXPECT_FALSE(parse_image_document(R"({"schemaVersion":2})").ok());
  EXPECT_FALSE(parse_image_document(R"({"manifests":{}})").ok());
  EXPECT_FALSE(parse_image_document(R"({"manifests":[{"digest":"md5:x","size":1}]})").ok());
  EXPECT_FALSE(
      parse_image_document(R"({"manifests":[{"digest":")" + digest_of('1') + R"(","size":-1}]})").ok());
  const auto typed = parse_image_document(R"({"manifests":[{"digest":")" + digest_of('1') +
                                          R"(","size":1,"mediaType":7,"platform":{"os":1}}]})");
  ASSERT_TRUE(typed.ok());  // a wrongly typed optional field reads as absent
  EXPECT_EQ(typed->manifests[0].os, "");
}

// Shows platform flags and uname machine names map to OCI platforms.
TEST(ImageContent, Platforms) {
  EXPECT_EQ(parse_platform("linux/amd64")->architecture, "amd64");
  EXPECT_EQ(parse_platform("linux/arm/v7")->variant, "v7");
  EXPECT_FALSE(parse_platform("linux").ok());
  EXPECT_FALSE(parse_platform("linux//v7").ok());
  EXPECT_FALSE(parse_platform("a/b/c/d").ok());
  EXPECT_EQ(oci_architecture("x86_64"), "amd64");
  EXPECT_EQ(oci_architecture("aarch64"), "arm64");
  EXPECT_EQ(oci_architecture("armv7l"), "arm");
  EXPECT_EQ(oci_architecture("s390x"), "s390x");
}

}  // namespace
}  // namespace peerd::workload
