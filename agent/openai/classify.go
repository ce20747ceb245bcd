package openai

import "strings"

// Endpoint names an API operation whose bodies the package understands.
type Endpoint string

// The endpoints the package understands; anything else is Other.
const (
	ChatCompletions Endpoint = "chat.completions" // POST /v1/chat/completions
	Responses       Endpoint = "responses"        // POST /v1/responses
	Completions     Endpoint = "completions"      // POST /v1/completions
	Embeddings      Endpoint = "embeddings"       // POST /v1/embeddings
	Other           Endpoint = "other"
)

// Classify names the endpoint of a request from its method and its request
// target. It matches the endpoint's path segments at the end of the path,
// so that a base path before them (/v1/..., /openai/v1/..., an Azure
// deployment's /openai/deployments/NAME/...) does not matter, and it ignores
// a query string, a fragment, a trailing slash, empty segments and the
// scheme and authority of an absolute-form target. Methods are
// case-sensitive (RFC 9110, section 9.1): only POST creates anything, so
// every other method, GET /v1/responses/{id} included, is Other.
func Classify(method, path string) Endpoint {
	if method != "POST" {
		return Other
	}
	if rest, ok := strings.CutPrefix(path, "https://"); ok {
		path = rest
	} else if rest, ok := strings.CutPrefix(path, "http://"); ok {
		path = rest
	}
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	last, rest := lastSegment(path)
	switch last {
	case "responses":
		return Responses
	case "embeddings":
		return Embeddings
	case "completions":
		if prev, _ := lastSegment(rest); prev == "chat" {
			return ChatCompletions
		}
		return Completions
	}
	return Other
}

// lastSegment returns the last non-empty segment of a slash-separated path
// and the path before it.
func lastSegment(path string) (last, rest string) {
	path = strings.TrimRight(path, "/")
	i := strings.LastIndexByte(path, '/')
	return path[i+1:], path[:max(i, 0)]
}
