DROP TABLE prompt_stream_events;
DROP TABLE prompt_streams;
