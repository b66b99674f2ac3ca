"""Model, data, checkpoint and storage helpers shared by the training job and the
serving app. Runs on a Ray cluster: nothing here imports pulumi or knows about
infrastructure beyond a storage URI."""
