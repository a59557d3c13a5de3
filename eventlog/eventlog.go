// Package eventlog holds what every Kafka client of Allezon shares: the
// protocol version it speaks and the sarama settings that are not a
// producer's or a consumer's own. The gateway's producer (gateway/publish)
// and the stream workers (pipeline) build their configurations from here,
// so the two sides of the event log cannot drift apart.
package eventlog

import "github.com/IBM/sarama"

// Version is the Kafka protocol version the clients speak: what the
// embedded broker (kfake) and the production brokers both serve.
var Version = sarama.V3_6_0_0

// NewSaramaConfig is the base configuration of a client named clientID.
func NewSaramaConfig(clientID string) *sarama.Config {
	sc := sarama.NewConfig()
	sc.ClientID = clientID
	sc.Version = Version
	sc.MetricRegistry = nilRegistry{}
	return sc
}
