#include "peerd/daemon/k8s/kubeconfig.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace peerd::daemon::k8s {
namespace {

constexpr size_t kYamlLinesMax = 100000;
constexpr size_t kYamlDepthMax = 64;

struct Line {
  size_t number;  // 1-based, for errors
  size_t indent;
  std::string text;  // without indentation, comment and trailing spaces
};

std::string strip_comment(const std::string& text) {
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quote != 0) {
      if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      if (i == 0 || text[i - 1] == ' ' || text[i - 1] == ':' || text[i - 1] == '-') quote = c;
    } else if (c == '#' && (i == 0 || text[i - 1] == ' ')) {
      return text.substr(0, i);
    }
  }
  return text;
}

std::string rtrim(std::string text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  return text;
}

class YamlReader {
 public:
  explicit YamlReader(std::vector<Line> lines) : lines_(std::move(lines)) {}

  Result<nlohmann::json, std::string> document() {
    if (lines_.empty()) return nlohmann::json::object();
    auto value = block(lines_[0].indent, 0);
    if (!value) return value;
    if (next_ < lines_.size()) return error(lines_[next_], "unexpected indentation");
    return value;
  }

 private:
  static Unexpected<std::string> error(const Line& line, const std::string& what) {
    return fail("line " + std::to_string(line.number) + ": " + what);
  }

  static bool is_item(const std::string& text) { return text == "-" || text.starts_with("- "); }

  Result<nlohmann::json, std::string> block(size_t indent, size_t depth) {
    if (depth > kYamlDepthMax) return error(lines_[next_], "nested too deeply");
    if (is_item(lines_[next_].text)) return sequence(indent, depth);
    return mapping(indent, depth);
  }

  Result<nlohmann::json, std::string> sequence(size_t indent, size_t depth) {
    nlohmann::json items = nlohmann::json::array();
    while (next_ < lines_.size() && lines_[next_].indent == indent && is_item(lines_[next_].text)) {
      Line& line = lines_[next_];
      const std::string rest = line.text == "-" ? "" : line.text.substr(2);
      size_t offset = 2;
      while (offset < line.text.size() && line.text[offset] == ' ') ++offset;
      if (rest.find_first_not_of(' ') == std::string::npos) {
        ++next_;
        if (next_ < lines_.size() && lines_[next_].indent > indent) {
          auto value = block(lines_[next_].indent, depth + 1);
          if (!value) return value;
          items.push_back(std::move(*value));
        } else {
          items.push_back(nullptr);
        }
      } else if (key_split(line.text.substr(offset)).has_value()) {
        // "- key: value" opens a mapping whose keys line up after the dash.
        line.indent += offset;
        line.text = line.text.substr(offset);
        auto value = mapping(line.indent, depth + 1);
        if (!value) return value;
        items.push_back(std::move(*value));
      } else {
        auto value = scalar(line, line.text.substr(offset));
        if (!value) return value;
        items.push_back(std::move(*value));
        ++next_;
      }
    }
    return items;
  }

  // (key, value text) of "key: value" / "key:"; nullopt when the text is not a mapping entry.
  static std::optional<std::pair<std::string, std::string>> key_split(const std::string& text) {
    size_t colon = std::string::npos;
    if (!text.empty() && (text[0] == '"' || text[0] == '\'')) {
      const size_t close = text.find(text[0], 1);
      if (close == std::string::npos) return std::nullopt;
      if (close + 1 < text.size() && text[close + 1] == ':') colon = close + 1;
    } else {
      for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == ':' && (i + 1 == text.size() || text[i + 1] == ' ')) {
          colon = i;
          break;
        }
      }
    }
    if (colon == std::string::npos) return std::nullopt;
    std::string key = text.substr(0, colon);
    if (!key.empty() && (key[0] == '"' || key[0] == '\'')) key = key.substr(1, key.size() - 2);
    std::string value = colon + 1 < text.size() ? text.substr(colon + 1) : "";
    value.erase(
        0, value.find_first_not_of(' ') == std::string::npos ? value.size() : value.find_first_not_of(' '));
    return std::make_pair(std::move(key), std::move(value));
  }

  Result<nlohmann::json, std::string> mapping(size_t indent, size_t depth) {
    nlohmann::json object = nlohmann::json::object();
    while (next_ < lines_.size() && lines_[next_].indent == indent && !is_item(lines_[next_].text)) {
      const Line& line = lines_[next_];
      auto entry = key_split(line.text);
      if (!entry) return error(line, "expected 'key: value'");
      auto& [key, value_text] = *entry;
      ++next_;
      if (!value_text.empty()) {
        auto value = scalar(line, value_text);
        if (!value) return value;
        object[key] = std::move(*value);
      } else if (next_ < lines_.size() && (lines_[next_].indent > indent ||
                                           (lines_[next_].indent == indent && is_item(lines_[next_].text)))) {
        auto value = block(lines_[next_].indent, depth + 1);
        if (!value) return value;
        object[key] = std::move(*value);
      } else {
        object[key] = nullptr;
      }
    }
    if (next_ < lines_.size() && lines_[next_].indent > indent)
      return error(lines_[next_], "unexpected indentation");
    return object;
  }

  static Result<nlohmann::json, std::string> scalar(const Line& line, const std::string& text) {
    if (text == "{}") return nlohmann::json::object();
    if (text == "[]") return nlohmann::json::array();
    if (text == "null" || text == "~") return nlohmann::json(nullptr);
    if (text == "true") return nlohmann::json(true);
    if (text == "false") return nlohmann::json(false);
    if (text[0] == '{' || text[0] == '[' || text[0] == '&' || text[0] == '*' || text[0] == '|' ||
        text[0] == '>') {
      return error(line, "unsupported YAML (flow collections, anchors, block scalars)");
    }
    if (text[0] == '"') {
      std::string out;
      size_t i = 1;
      for (; i < text.size() && text[i] != '"'; ++i) {
        if (text[i] == '\\' && i + 1 < text.size()) {
          const char escaped = text[++i];
          out.push_back(escaped == 'n' ? '\n' : escaped == 't' ? '\t' : escaped);
        } else {
          out.push_back(text[i]);
        }
      }
      if (i + 1 != text.size()) return error(line, "bad double-quoted string");
      return nlohmann::json(out);
    }
    if (text[0] == '\'') {
      std::string out;
      size_t i = 1;
      for (; i < text.size(); ++i) {
        if (text[i] == '\'') {
          if (i + 1 < text.size() && text[i + 1] == '\'') {
            out.push_back('\'');
            ++i;
          } else {
            break;
          }
        } else {
          out.push_back(text[i]);
        }
      }
      if (i + 1 != text.size()) return error(line, "bad single-quoted string");
      return nlohmann::json(out);
    }
    // Numbers stay strings where kubeconfig expects strings; the readers below accept both.
    char* end = nullptr;
    const long long number = std::strtoll(text.c_str(), &end, 10);
    if (end != nullptr && *end == 0) return nlohmann::json(number);
    return nlohmann::json(text);
  }

  std::vector<Line> lines_;
  size_t next_ = 0;
};

std::string string_field(const nlohmann::json& object, const char* key) {
  if (!object.is_object() || !object.contains(key)) return "";
  const auto& value = object[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_integer()) return std::to_string(value.get<long long>());
  return "";
}

// The `inner` object of the entry named `name` in a kubeconfig list ("clusters", "users", "contexts").
const nlohmann::json* named(const nlohmann::json& root, const char* list, const std::string& name,
                            const char* inner) {
  if (!root.contains(list) || !root[list].is_array()) return nullptr;
  for (const auto& entry : root[list]) {
    if (entry.is_object() && string_field(entry, "name") == name && entry.contains(inner) &&
        entry[inner].is_object()) {
      return &entry[inner];
    }
  }
  return nullptr;
}

std::string resolve_path(const std::string& path, const std::string& base_dir) {
  if (path.empty() || std::filesystem::path(path).is_absolute() || base_dir.empty()) return path;
  return (std::filesystem::path(base_dir) / path).string();
}

}  // namespace

Result<nlohmann::json, std::string> parse_simple_yaml(std::string_view text) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && (text[first] == '{')) {
    auto parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) return fail(std::string("not valid JSON"));
    return parsed;
  }
  std::vector<Line> lines;
  std::istringstream in{std::string(text)};
  std::string raw;
  size_t number = 0;
  while (std::getline(in, raw)) {
    ++number;
    if (number > kYamlLinesMax) return fail(std::string("more than 100000 lines"));
    if (raw.find('\t') < raw.find_first_not_of(" \t"))
      return fail("line " + std::to_string(number) + ": tab indentation");
    const std::string content = rtrim(strip_comment(raw));
    const size_t indent = content.find_first_not_of(' ');
    if (indent == std::string::npos) continue;
    if (indent == 0 && (content == "---" || content.starts_with("%"))) continue;
    lines.push_back({number, indent, content.substr(indent)});
  }
  return YamlReader(std::move(lines)).document();
}

Result<std::string, std::string> decode_base64(std::string_view text) {
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  bool padding = false;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    if (c == '=') {
      padding = true;
      continue;
    }
    if (padding) return fail(std::string("bad base64: data after padding"));
    int value;
    if (c >= 'A' && c <= 'Z')
      value = c - 'A';
    else if (c >= 'a' && c <= 'z')
      value = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      value = c - '0' + 52;
    else if (c == '+')
      value = 62;
    else if (c == '/')
      value = 63;
    else
      return fail(std::string("bad base64 character"));
    buffer = (buffer << 6) | static_cast<uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

Result<ApiConfig, std::string> parse_kubeconfig(std::string_view text, const std::string& base_dir,
                                                const std::string& context_name) {
  auto root = parse_simple_yaml(text);
  if (!root) return fail("kubeconfig: " + root.error());
  if (!root->is_object()) return fail(std::string("kubeconfig: not a mapping"));
  const std::string context = context_name.empty() ? string_field(*root, "current-context") : context_name;
  if (context.empty()) return fail(std::string("kubeconfig: no current-context"));
  const nlohmann::json* context_entry = named(*root, "contexts", context, "context");
  if (context_entry == nullptr) return fail("kubeconfig: context '" + context + "' not found");
  const std::string cluster_name = string_field(*context_entry, "cluster");
  const nlohmann::json* cluster = named(*root, "clusters", cluster_name, "cluster");
  if (cluster == nullptr) return fail("kubeconfig: cluster '" + cluster_name + "' not found");

  ApiConfig config;
  config.origin = base_dir.empty() ? "kubeconfig" : base_dir;
  config.server = string_field(*cluster, "server");
  while (config.server.ends_with("/")) config.server.pop_back();
  if (!config.server.starts_with("https://") && !config.server.starts_with("http://"))
    return fail("kubeconfig: cluster '" + cluster_name + "' has no http(s) server");
  config.ca_file = resolve_path(string_field(*cluster, "certificate-authority"), base_dir);
  if (auto data = string_field(*cluster, "certificate-authority-data"); !data.empty()) {
    auto pem = decode_base64(data);
    if (!pem) return fail("kubeconfig: certificate-authority-data: " + pem.error());
    config.ca_pem = std::move(*pem);
  }
  if (cluster->contains("insecure-skip-tls-verify"))
    config.insecure_skip_tls_verify = (*cluster)["insecure-skip-tls-verify"] == true;

  const std::string user_name = string_field(*context_entry, "user");
  if (!user_name.empty()) {
    const nlohmann::json* user = named(*root, "users", user_name, "user");
    if (user == nullptr) return fail("kubeconfig: user '" + user_name + "' not found");
    if (user->contains("exec") || user->contains("auth-provider"))
      return fail("kubeconfig: user '" + user_name +
                  "' uses a credential plugin (exec/auth-provider), "
                  "which peerd does not run; use a token or client certificate");
    config.token = string_field(*user, "token");
    config.token_file = resolve_path(string_field(*user, "tokenFile"), base_dir);
    config.client_cert_file = resolve_path(string_field(*user, "client-certificate"), base_dir);
    config.client_key_file = resolve_path(string_field(*user, "client-key"), base_dir);
    for (const auto& [field, target] : {std::pair{"client-certificate-data", &config.client_cert_pem},
                                        std::pair{"client-key-data", &config.client_key_pem}}) {
      if (auto data = string_field(*user, field); !data.empty()) {
        auto pem = decode_base64(data);
        if (!pem) return fail(std::string("kubeconfig: ") + field + ": " + pem.error());
        *target = std::move(*pem);
      }
    }
  }
  if (auto name = string_field(*context_entry, "namespace"); !name.empty()) config.namespace_name = name;
  return config;
}

Result<ApiConfig, std::string> load_kubeconfig(const std::string& path, const std::string& context_name) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("cannot read kubeconfig " + path);
  std::stringstream text;
  text << in.rdbuf();
  const std::string base_dir = std::filesystem::absolute(path).parent_path().string();
  auto config = parse_kubeconfig(text.str(), base_dir, context_name);
  if (config) config->origin = path;
  return config;
}

}  // namespace peerd::daemon::k8s
