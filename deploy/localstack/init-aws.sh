#!/bin/bash
# LocalStack "ready" hook: creates the order queue with its dead-letter queue (redrive after 5
# receives, matching QUEUE_MAX_RECEIVES) and verifies the SES sender, as a real AWS account
# would be set up before the service starts.
set -euo pipefail
awslocal sqs create-queue --queue-name orders-dlq >/dev/null
DLQ_ARN=$(awslocal sqs get-queue-attributes --queue-url http://localhost:4566/000000000000/orders-dlq \
  --attribute-names QueueArn --query Attributes.QueueArn --output text)
awslocal sqs create-queue --queue-name orders --attributes \
  "{\"VisibilityTimeout\":\"30\",\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"$DLQ_ARN\\\",\\\"maxReceiveCount\\\":\\\"5\\\"}\"}" >/dev/null
awslocal ses verify-email-identity --email-address "${SES_SENDER:-orders@example.com}"
echo "order-service AWS resources ready"
