package fakeopenai

import (
	"fmt"
	"net/http"
	"strconv"
)

// apiError is an answer in the API's error shape:
//
//	{"error":{"message":"...","type":"...","param":null,"code":null}}
//
// An empty param or code is sent as null, as the API does.
type apiError struct {
	status  int
	message string
	typ     string
	param   string
	code    string
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (e *apiError) body() obj {
	return obj{{"error", obj{
		{"message", e.message},
		{"type", e.typ},
		{"param", nullable(e.param)},
		{"code", nullable(e.code)},
	}}}
}

func writeError(w http.ResponseWriter, e *apiError) {
	b, _ := marshal(e.body())
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// errorForStatus is the error X-Fake-Status asks for. Messages, types and
// codes follow the OpenAI API reference's error-codes guide and what the API
// returns for these cases.
func errorForStatus(status int) *apiError {
	e := &apiError{status: status, typ: "invalid_request_error"}
	switch status {
	case http.StatusBadRequest:
		e.message = "This model's maximum context length is 128000 tokens. However, your messages resulted in 128001 tokens. Please reduce the length of the messages. (fake: X-Fake-Status: 400)"
		e.param = "messages"
		e.code = "context_length_exceeded"
	case http.StatusUnauthorized:
		e.message = "Incorrect API key provided: sk-fake***. You can find your API key at https://platform.openai.com/account/api-keys. (fake: X-Fake-Status: 401)"
		e.code = "invalid_api_key"
	case http.StatusForbidden:
		e.message = "Country, region, or territory not supported (fake: X-Fake-Status: 403)"
		e.typ = "request_forbidden"
		e.code = "unsupported_country_region_territory"
	case http.StatusNotFound:
		e.message = "The model `fake-missing` does not exist or you do not have access to it. (fake: X-Fake-Status: 404)"
		e.code = "model_not_found"
	case http.StatusTooManyRequests:
		e.message = "Rate limit reached for fake-model in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. (fake: X-Fake-Status: 429)"
		e.typ = "requests"
		e.code = "rate_limit_exceeded"
	case http.StatusInternalServerError:
		e.message = "The server had an error while processing your request. Sorry about that! (fake: X-Fake-Status: 500)"
		e.typ = "server_error"
	case http.StatusServiceUnavailable:
		e.message = "The engine is currently overloaded, please try again later. (fake: X-Fake-Status: 503)"
		e.typ = "server_error"
	default:
		e.message = fmt.Sprintf("fake error (X-Fake-Status: %d)", status)
		if status >= 500 {
			e.typ = "server_error"
		}
	}
	return e
}

// malformedJSON is the API's answer to a body that is not valid JSON.
func malformedJSON(err error) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error",
		message: "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.) (fake: " + err.Error() + ")"}
}

func missingParam(name string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: name,
		code: "missing_required_parameter", message: fmt.Sprintf("Missing required parameter: '%s'.", name)}
}

func invalidParam(name, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: name,
		code: "invalid_value", message: msg}
}

func badHeader(name, value string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: name,
		code: "fake_bad_header", message: fmt.Sprintf("fake: bad %s header %q", name, value)}
}

// streamError is the in-stream error that X-Fake-Stream-Error asks for; the
// API sends this shape when a stream fails after it started.
func streamError() *apiError {
	return &apiError{status: http.StatusInternalServerError, typ: "server_error",
		message: "The server had an error while processing your request. Sorry about that! (fake: X-Fake-Stream-Error)"}
}
