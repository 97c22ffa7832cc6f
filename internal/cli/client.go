package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxResponse bounds what is read of a response; a page of 100 streams is far below it.
const maxResponse = 16 << 20

// apiError is an error the API answered with.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// httpClient is the client every request goes through; timeouts come from the context.
var httpClient = &http.Client{}

// call sends one request to the API and returns the body of a successful response. body, if
// not nil, is sent as JSON. An error response becomes an *apiError.
func (c *cli) call(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := c.apiURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rb io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rb = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rb)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "gopcast-cli")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		// The URL error names the address and the cause (refused, timeout, DNS).
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach the API at %s: %w", c.apiURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("reading the API's response: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error *apiError `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != nil && e.Error.Code != "" {
			e.Error.Status = resp.StatusCode
			return nil, e.Error
		}
		// Not the API talking: a proxy, a load balancer, or the wrong address.
		return nil, fmt.Errorf("%s %s: HTTP %s%s", method, u, resp.Status, snippet(data))
	}
	return data, nil
}

// snippet is the start of a non-API response body, for an error message.
func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if s == "" {
		return ""
	}
	if r := []rune(s); len(r) > 120 {
		s = string(r[:120]) + "…"
	}
	return ": " + s
}

// fail reports err and returns the exit code for it.
func (c *cli) fail(err error) int {
	fmt.Fprintf(c.stderr, "gopcast: %v\n", err)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		fmt.Fprintln(c.stderr, "Check the token in GOPCAST_API_TOKEN (or --api-token) against the server's --api-token.")
	}
	return exitError
}

func decode(raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("the API's response is not what this gopcast expects: %w", err)
	}
	return nil
}
