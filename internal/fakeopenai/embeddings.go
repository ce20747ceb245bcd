package fakeopenai

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"net/http"
)

// Shapes follow the OpenAI API reference for Embeddings (POST /v1/embeddings)
// and Models (GET /v1/models, GET /v1/models/{model}).

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
}

// Vector is the deterministic unit-length embedding the fake returns for
// text with dims dimensions (as float32, the precision the API uses).
func Vector(text string, dims int) []float32 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(text))
	seed := h.Sum64()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	v := make([]float32, dims)
	var norm float64
	for i := range v {
		f := rng.Float64()*2 - 1
		v[i] = float32(f)
		norm += f * f
	}
	if norm = math.Sqrt(norm); norm > 0 {
		for i := range v {
			v[i] = float32(float64(v[i]) / norm)
		}
	}
	return v
}

func (s *Server) embeddings(x *exchange) {
	var req embeddingRequest
	if !x.decode(&req) {
		return
	}
	texts, ok := inputTexts(req.Input)
	dims := s.cfg.EmbeddingDims
	var bad *apiError
	switch {
	case req.Model == "":
		bad = missingParam("model")
	case len(req.Input) == 0 || string(req.Input) == "null":
		bad = missingParam("input")
	case !ok || len(texts) == 0:
		bad = invalidParam("input", "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.")
	case req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64":
		bad = invalidParam("encoding_format", "Invalid value for 'encoding_format': expected 'float' or 'base64'.")
	case req.Dimensions != nil && (*req.Dimensions < 1 || *req.Dimensions > 4096):
		bad = invalidParam("dimensions", "Invalid 'dimensions': must be between 1 and 4096.")
	}
	if bad != nil {
		writeError(x.w, bad)
		return
	}
	if req.Dimensions != nil {
		dims = *req.Dimensions
	}
	data := make([]obj, len(texts))
	for i, t := range texts {
		v := Vector(t, dims)
		var emb any = v
		if req.EncodingFormat == "base64" {
			b := make([]byte, 4*len(v))
			for j, f := range v {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(f))
			}
			emb = base64.StdEncoding.EncodeToString(b)
		}
		data[i] = obj{{"object", "embedding"}, {"index", i}, {"embedding", emb}}
	}
	tokens := max(1, countTokens(texts...))
	x.writeJSON(obj{
		{"object", "list"}, {"data", data}, {"model", req.Model},
		{"usage", obj{{"prompt_tokens", tokens}, {"total_tokens", tokens}}},
	})
}

// modelCreated is a fixed "created" time for the model list.
const modelCreated = 1700000000

func model(id string) obj {
	return obj{{"id", id}, {"object", "model"}, {"created", modelCreated}, {"owned_by", "system"}}
}

func (s *Server) listModels(x *exchange) {
	data := make([]obj, len(s.cfg.Models))
	for i, id := range s.cfg.Models {
		data[i] = model(id)
	}
	x.writeJSON(obj{{"object", "list"}, {"data", data}})
}

func (s *Server) getModel(x *exchange, id string) {
	for _, m := range s.cfg.Models {
		if m == id {
			x.writeJSON(model(id))
			return
		}
	}
	writeError(x.w, &apiError{status: http.StatusNotFound, typ: "invalid_request_error", param: "model",
		code: "model_not_found", message: "The model `" + id + "` does not exist or you do not have access to it."})
}
