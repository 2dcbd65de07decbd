// Everything libmq offers, in one include: storage (LogStore, Topic, Partition), consumer groups
// (Broker, ConsumerGroup, Subscription) and the Queue clients.
#pragma once

#include "mq/broker.h"
#include "mq/clock.h"
#include "mq/consumer_group.h"
#include "mq/file_system.h"
#include "mq/log_store.h"
#include "mq/message.h"
#include "mq/options.h"
#include "mq/partition.h"
#include "mq/queue.h"
#include "mq/status.h"
#include "mq/subscription.h"
#include "mq/topic.h"
