// Command chat is the SDK workload of the Kubernetes e2e tests: in a pod
// of a Deployment, it calls chat completions at https://api.openai.com
// with the official OpenAI Go SDK, prints the answer and then stays up,
// as a service would, so that the pod (and its owner) still exist when
// the test reads the record. It trusts what SSL_CERT_FILE names, as any
// Go program does.
//
// With CHAT_LOOP=1 it is traffic instead: it sends "<prompt> #<n>" for
// n = 1, 2, … every CHAT_INTERVAL (default 100ms), forever, and prints
// each outcome as "ok <n>" or "refused <n>: <error>", so that a test can
// tell, per request, what the caller saw while the agent was replaced.
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
	if os.Getenv("CHAT_LOOP") == "1" {
		interval := 100 * time.Millisecond
		if v := os.Getenv("CHAT_INTERVAL"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				fmt.Fprintf(os.Stderr, "CHAT_INTERVAL %q: %v\n", v, err)
				os.Exit(2)
			}
			interval = d
		}
		for n := 1; ; n++ {
			_, err := call(client, fmt.Sprintf("%s #%d", prompt, n))
			if err != nil {
				fmt.Printf("refused %d: %v\n", n, err)
			} else {
				fmt.Printf("ok %d\n", n)
			}
			time.Sleep(interval)
		}
	}
	// A few attempts, each printed: a refusal while the agent is not
	// ready yet is then in the log, not hidden by the SDK's retries.
	for attempt := 1; attempt <= 30; attempt++ {
		answer, err := call(client, prompt)
		if err == nil {
			fmt.Printf("answer: %s\n", answer)
			select {}
		}
		fmt.Printf("attempt %d: %v\n", attempt, err)
		time.Sleep(time.Second)
	}
	os.Exit(1)
}

// call sends one chat completion and returns the first choice's text.
func call(client openai.Client, prompt string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	})
	if err != nil {
		return "", err
	}
	if len(c.Choices) == 0 {
		return "", fmt.Errorf("an answer without choices")
	}
	return c.Choices[0].Message.Content, nil
}
