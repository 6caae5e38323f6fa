DROP TABLE ai_llm_repos;
DROP TABLE ai_llms;
