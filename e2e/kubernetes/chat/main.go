// Command chat is the SDK workload of the Kubernetes e2e tests: in a pod
// of a Deployment, it calls chat completions at https://api.openai.com
// with the official OpenAI Go SDK, prints the answer and then stays up,
// as a service would, so that the pod (and its owner) still exist when
// the test reads the record. It trusts what SSL_CERT_FILE names, as any
// Go program does.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func main() {
	prompt := strings.Join(os.Args[1:], " ")
	client := openai.NewClient(option.WithAPIKey("sk-test-not-a-real-key"), option.WithMaxRetries(0))
	// A few attempts, each printed: a refusal while the agent is not
	// ready yet is then in the log, not hidden by the SDK's retries.
	var err error
	for attempt := 1; attempt <= 30; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var c *openai.ChatCompletion
		c, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    openai.ChatModelGPT4oMini,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
		})
		cancel()
		if err == nil && len(c.Choices) > 0 {
			fmt.Printf("answer: %s\n", c.Choices[0].Message.Content)
			select {}
		}
		fmt.Printf("attempt %d: %v\n", attempt, err)
		time.Sleep(time.Second)
	}
	os.Exit(1)
}
