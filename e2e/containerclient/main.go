// Command containerclient is the workload of the e2e test that runs in a
// real container: a static binary that sends one chat request with the
// official OpenAI Go SDK, to its default base URL, and prints the reply.
// The test builds it with CGO_ENABLED=0 and puts it alone in an image
// made from scratch.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: containerclient PROMPT")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := openai.NewClient(option.WithAPIKey("sk-test-not-a-real-key"), option.WithMaxRetries(0))
	r, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(os.Args[1])},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "containerclient:", err)
		os.Exit(1)
	}
	fmt.Println(r.Choices[0].Message.Content)
}
