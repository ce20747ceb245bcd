// Package openai understands requests and responses of the OpenAI API well
// enough to record them: it names the endpoint of a request (Classify),
// reads the parts of a request body that an audit record needs
// (ParseRequest, ParseMultipart), reads JSON responses and error bodies
// (ParseResponse), splits server-sent event streams into events
// (SSEParser) and reassembles a streamed answer from its events
// (StreamAssembler).
//
// The package only observes copies of what passes through the agent's proxy:
// it never changes a byte, and it never keeps what a record must not hold or
// cannot bear (base64 images, audio and file data, embedding vectors).
// Everything is bounded by the size of its input or by a caller's limit, and
// no input makes it panic; a body that is cut short or malformed yields what
// could be read before the fault, together with an error that says what is
// wrong.
//
// Shapes follow the OpenAI API reference (platform.openai.com/docs/api-reference):
// Chat Completions, Responses, legacy Completions, Embeddings and their
// streaming events; event streams follow the WHATWG HTML standard's
// "Server-sent events" section.
//
// Object keys are matched exactly, as the API's own servers match them: the
// encoding/json package would also take a key that differs only in case
// ("Messages" for "messages"), which would let a client show the record one
// thing and the API another, so such keys are neutralized before decoding.
package openai

import "errors"

// Errors that the package's functions wrap; test with errors.Is.
var (
	// ErrInvalidJSON: a body is not well-formed JSON. The result holds
	// what came before the fault.
	ErrInvalidJSON = errors.New("body is not valid JSON")
	// ErrNotJSON: a body's content type is not one that carries JSON.
	ErrNotJSON = errors.New("body is not JSON")
	// ErrEmptyBody: a body that must hold JSON is empty.
	ErrEmptyBody = errors.New("body is empty")
	// ErrEventTooLarge: a server-sent event is over the parser's bound and
	// was dropped.
	ErrEventTooLarge = errors.New("server-sent event too large")
	// ErrIncompleteStream: an event stream ended in the middle of an event.
	ErrIncompleteStream = errors.New("event stream ended in the middle of an event")
	// ErrMultipart: a multipart body is malformed or cut short.
	ErrMultipart = errors.New("malformed multipart body")
)
